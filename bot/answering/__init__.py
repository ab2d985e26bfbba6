"""From a message's text to a decision and a reply: guard, small talk, handoff triggers, policy, replies."""
