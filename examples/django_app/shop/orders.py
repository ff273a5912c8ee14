"""Placing an order: the order's writes and the receipt's dispatch in one atomic block."""

from django.db import transaction

from runequeue.integrations.django import dispatch

from .jobs import SendReceipt


def place_order(order_id: int, *, fail: bool = False) -> None:
    with transaction.atomic():
        # ... the order's rows would be saved here ...
        dispatch(SendReceipt(order_id))  # held until the block commits
        if fail:
            raise RuntimeError(f"order {order_id} could not be placed")
