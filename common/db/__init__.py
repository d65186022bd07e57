"""Database access: an asyncpg pool, numbered SQL migrations, one module per aggregate.

Aggregate modules hold plain ``async def f(conn, ...)`` functions that take a connection, so callers decide
the transaction boundaries.
"""
