"""The conversation store's database at scale: PostgreSQL through asyncpg (bot.storage.postgres.database)."""
