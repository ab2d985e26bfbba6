"""The demo store's business actions, run by the rasa-sdk action server in its own environment.

Operators' code: plain rasa-sdk actions (`rasa_sdk.Action` subclasses), so an action server written for
Rasa works here unchanged, and these work under Rasa. `bot serve` starts the server when
`actions.start` is true (README, "Business actions and forms").
"""
