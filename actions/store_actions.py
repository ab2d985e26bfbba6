"""Order status, starting a return, and leaving a message for the team: plain rasa-sdk actions."""

from __future__ import annotations

from typing import Any

from rasa_sdk import Action, Tracker
from rasa_sdk.events import EventType, SlotSet
from rasa_sdk.executor import CollectingDispatcher

from actions.orders import OrdersDatabase

NOT_FOUND = (
    "I couldn't find an order {number} for that email address. Please check both: the order number is in "
    "your confirmation email and starts with NW-."
)


def _slot(tracker: Tracker, name: str) -> str:
    value = tracker.get_slot(name)
    return str(value).strip() if value is not None else ""


class ActionOrderStatus(Action):
    """Order number and email in, status, carrier and tracking link out; a wrong email learns nothing."""

    def name(self) -> str:
        return "action_order_status"

    def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]) -> list[EventType]:
        number, email = _slot(tracker, "order_number"), _slot(tracker, "email")
        order = OrdersDatabase().order(number, email)
        if order is None:
            dispatcher.utter_message(text=NOT_FOUND.format(number=number or "with that number"))
            return [SlotSet("order_status", None)]
        text = f"Order {order.number} ({', '.join(order.items)}) is {order.status}."
        if order.tracking_link is not None:
            text += f" It is with {order.carrier}: track it at {order.tracking_link}"
        dispatcher.utter_message(text=text)
        return [SlotSet("order_status", order.status)]


class ActionStartReturn(Action):
    """Order, item and reason in, a return number out (stored with the order)."""

    def name(self) -> str:
        return "action_start_return"

    def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]) -> list[EventType]:
        database = OrdersDatabase()
        number, email = _slot(tracker, "order_number"), _slot(tracker, "email")
        order = database.order(number, email)
        if order is None:
            dispatcher.utter_message(text=NOT_FOUND.format(number=number or "with that number"))
            return []
        item, reason = _slot(tracker, "return_item"), _slot(tracker, "return_reason")
        if order.status == "processing":
            dispatcher.utter_message(text=f"Order {order.number} has not shipped yet: you can cancel it instead.")
            return []
        return_number = database.start_return(order, item, reason, tracker.latest_message.get("message_id"))
        dispatcher.utter_message(
            text=f"Your return {return_number} for the {item} from order {order.number} is started. We'll email "
            f"a prepaid label to {order.email} within a day."
        )
        return [SlotSet("return_number", return_number)]


class ActionLeaveMessage(Action):
    """Email and message in, a ticket out: for when nobody from the team is online."""

    def name(self) -> str:
        return "action_leave_message"

    def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]) -> list[EventType]:
        email, message = _slot(tracker, "email"), _slot(tracker, "message_for_team")
        message_id = tracker.latest_message.get("message_id")
        ticket = OrdersDatabase().leave_message(email, message, tracker.sender_id, message_id)
        dispatcher.utter_message(text=f"Thank you. Your message is ticket {ticket}; the team will reply to {email}.")
        return [SlotSet("ticket_number", ticket)]
