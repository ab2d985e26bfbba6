"""Middle floor: one small module per channel, translating native traffic to Messages and Replies."""
