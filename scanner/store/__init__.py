"""The findings store: SQLModel tables, sessions and migrations, and the queries reports use.

SQLModel rows never leave this package: the engine hands in domain results, reports get view data.
"""
