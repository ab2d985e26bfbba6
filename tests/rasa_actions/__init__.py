"""Actions written for Rasa, as any rasa-sdk user writes them: the contract tests run them unchanged.

Loaded by the rasa-sdk action server in its own environment (.venv-actions), never by the bot's; not
type-checked with the product (rasa-sdk is not installed beside it).
"""

import asyncio
from typing import Any

from rasa_sdk import Action, Tracker
from rasa_sdk.events import ActiveLoop, AllSlotsReset, FollowupAction, SlotSet
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.forms import FormValidationAction
from rasa_sdk.interfaces import ActionExecutionRejection


class ActionGreetByName(Action):
    def name(self) -> str:
        return "action_greet_by_name"

    def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]) -> list[Any]:
        name = tracker.get_slot("name") or "there"
        dispatcher.utter_message(
            text=f"Hello {name}, you said: {tracker.latest_message.get('text')}",
            buttons=[{"title": "Track an order", "payload": "/track"}],
        )
        dispatcher.utter_message(response="utter_anything_else")
        return [SlotSet("greeted", True), FollowupAction("action_listen")]


class ActionEverything(Action):
    def name(self) -> str:
        return "action_everything"

    def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]) -> list[Any]:
        dispatcher.utter_message(text=f"domain slots: {len(domain.get('slots', {}))}; loop: {tracker.active_loop}")
        return [AllSlotsReset(), SlotSet("kept", "yes"), ActiveLoop("order_form"), ActiveLoop(None)]


class ActionRejects(Action):
    def name(self) -> str:
        return "action_rejects"

    def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]) -> list[Any]:
        raise ActionExecutionRejection(self.name(), "not today")


class ActionRaises(Action):
    def name(self) -> str:
        return "action_raises"

    def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]) -> list[Any]:
        raise RuntimeError("the orders database is on fire")


class ActionSlow(Action):
    def name(self) -> str:
        return "action_slow"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]) -> list[Any]:
        await asyncio.sleep(30)
        return []


class ValidateOldOrderForm(FormValidationAction):
    """Rasa's own way to check a form's answers: validate_<slot> methods on a FormValidationAction."""

    def name(self) -> str:
        return "validate_old_order_form"

    def validate_order_number(
        self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> dict[str, Any]:
        if str(value).startswith("NW-9"):
            dispatcher.utter_message(text="Orders starting NW-9 are from our old shop, I can't look those up.")
            return {"order_number": None}
        return {"order_number": value}


class ActionCheckOldOrder(Action):
    def name(self) -> str:
        return "action_check_old_order"

    def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]) -> list[Any]:
        dispatcher.utter_message(text=f"Checked {tracker.get_slot('order_number')} for {tracker.get_slot('email')}.")
        return []
