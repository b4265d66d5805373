"""Drop-in facades for APIs agents are already written against."""
