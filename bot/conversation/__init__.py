"""The conversation layer: who owns a conversation (the bot, the queue, or a named agent), its slots, and
the events that changed them. The router reads it before any answering."""
