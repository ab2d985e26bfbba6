"""The embedded conversation store's database: one SQLite file (bot.storage.sqlite.database)."""
