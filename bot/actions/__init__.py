"""Business actions over rasa-sdk's webhook contract: the tracker and domain out, events and responses in."""
