"""A small shop whose Celery tasks hold four classic bugs, each beside its fixed twin.

``test_catches_bugs.py`` chaos-tests every pair: the buggy task must fail its
chaos test with a message naming the bug, and its fixed twin must pass the very
same test. The module is also copied into ``pytester`` projects, so it imports
nothing from the test suite, and every :class:`Shop` is a fresh app (its tasks
are not ``shared``), so no test sees another's tasks or fake provider.

======================  ==========================  ==============================
bug                     buggy task                  fixed twin
======================  ==========================  ==============================
double charge           ``shop.charge``             ``shop.charge_idempotent``
validation retried      ``shop.import_row``         ``shop.import_row_resilient``
down API hammered       ``shop.capture``            ``shop.capture_with_breaker``
thundering herd         ``shop.send_receipt``       ``shop.send_receipt_jittered``
======================  ==========================  ==============================

``shop.charge_task_key_only`` is a half fix: an idempotency key on the task but
not on the provider's request, which does not stop the double charge.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from celery import Celery

from resilience import RetryPolicy
from resilience.celery import ResilientTask

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

__all__ = ["EVERY_MINUTE", "OUTAGE_BREAKER", "PaymentsAPI", "Shop"]

EVERY_MINUTE = RetryPolicy(max_retries=20, initial_delay=60, strategy="constant")
"""How both capture tasks retry an outage: about once a minute. Only the breaker differs."""

OUTAGE_BREAKER = "payments_api"
"""The breaker of ``shop.capture_with_breaker``."""

_HERD_DELAY = 60.0  # seconds before the retry of a failed receipt


class PaymentsAPI:
    """A fake payment provider that honours idempotency keys, as Stripe's API does.

    Attributes:
        charges: ``(order_id, amount)`` of every charge made, in order.
        captures: the order ids captured, in order.
        record: called as ``record("charge", order_id)`` at each charge made; a
            test sets it to ``chaos.effect``.
    """

    def __init__(self) -> None:
        self.charges: list[tuple[int, int]] = []
        self.captures: list[int] = []
        self.record: Callable[[str, object], None] | None = None
        self._by_key: dict[str, str] = {}

    def charge(self, order_id: int, amount: int, *, idempotency_key: str | None = None) -> str:
        """Charge a card, once per idempotency key.

        Args:
            order_id: the order paid for.
            amount: the amount in cents.
            idempotency_key: a request seen before with this key returns the first
                charge's id and charges nothing.

        Returns:
            The charge's id.
        """
        if idempotency_key is not None and idempotency_key in self._by_key:
            return self._by_key[idempotency_key]
        self.charges.append((order_id, amount))
        charge_id = f"ch_{len(self.charges)}"
        if idempotency_key is not None:
            self._by_key[idempotency_key] = charge_id
        if self.record is not None:
            self.record("charge", order_id)
        return charge_id

    def capture(self, order_id: int) -> str:
        """Capture an authorised payment.

        Args:
            order_id: the order whose payment is captured.

        Returns:
            The capture's id.
        """
        self.captures.append(order_id)
        return f"cap_{order_id}"


def _amount(row: Mapping[str, object]) -> int:
    """The row's amount in cents; a value that is not a whole number is a validation error."""
    value = row.get("amount")
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    msg = f"amount must be a whole number of cents, got {value!r}"
    raise ValueError(msg)


class Shop:
    """A fresh Celery app with the shop's tasks, and the fake provider they call.

    Attributes:
        app: the Celery app (not set as current; its tasks are not shared).
        payments: the fake payment provider every task of this app calls.
    """

    def __init__(self) -> None:
        self.app = Celery("shop", broker="memory://", set_as_current=False)
        self.payments = PaymentsAPI()
        self._charges()
        self._imports()
        self._captures()
        self._receipts()

    def _charges(self) -> None:
        payments = self.payments

        # Bug: a read timeout after the provider charged the card is retried,
        # and the retry charges the card again.
        @self.app.task(base=ResilientTask, bind=True, name="shop.charge", shared=False)
        def charge(self: Any, order_id: int, amount: int) -> str:
            return payments.charge(order_id, amount)

        # Half fix: the task's key stops duplicate deliveries, but a run that
        # raised gives its key back, so the retry still charges again.
        @self.app.task(
            base=ResilientTask,
            bind=True,
            name="shop.charge_task_key_only",
            shared=False,
            idempotency_key="charge:{order_id}",
        )
        def charge_task_key_only(self: Any, order_id: int, amount: int) -> str:
            return payments.charge(order_id, amount)

        # Fix: the same key goes to the provider, which charges once per key.
        @self.app.task(
            base=ResilientTask,
            bind=True,
            name="shop.charge_idempotent",
            shared=False,
            idempotency_key="charge:{order_id}",
        )
        def charge_idempotent(self: Any, order_id: int, amount: int) -> str:
            return payments.charge(order_id, amount, idempotency_key=self.request.idempotency_key)

    def _imports(self) -> None:
        # Bug: a plain Celery task retrying every exception, forever, every 3
        # minutes: a row that can never be valid is retried until someone notices.
        @self.app.task(
            name="shop.import_row",
            shared=False,
            autoretry_for=(Exception,),
            max_retries=None,
        )
        def import_row(row: dict[str, object]) -> int:
            return _amount(row)

        # Fix: the failure is classified; PERMANENT_VALIDATION is dead-lettered at once.
        @self.app.task(
            base=ResilientTask, bind=True, name="shop.import_row_resilient", shared=False
        )
        def import_row_resilient(self: Any, row: dict[str, object]) -> int:
            return _amount(row)

    def _captures(self) -> None:
        payments = self.payments
        policies = {"policies": {"EXTERNAL_API_DOWN": EVERY_MINUTE}}

        # Bug: no breaker, so every retry of every task calls the API that is down.
        @self.app.task(
            base=ResilientTask, bind=True, name="shop.capture", shared=False, resilience=policies
        )
        def capture(self: Any, order_id: int) -> str:
            return payments.capture(order_id)

        # Fix: a breaker opens after a few failures and holds every task back
        # until its probe.
        @self.app.task(
            base=ResilientTask,
            bind=True,
            name="shop.capture_with_breaker",
            shared=False,
            breaker=OUTAGE_BREAKER,
            resilience=policies,
        )
        def capture_with_breaker(self: Any, order_id: int) -> str:
            return payments.capture(order_id)

    def _receipts(self) -> None:
        exact = RetryPolicy(initial_delay=_HERD_DELAY, jitter="none")
        jittered = RetryPolicy(initial_delay=_HERD_DELAY)  # the default jitter: +-10 %

        # Bug: no jitter, so every receipt that failed together retries together.
        @self.app.task(
            base=ResilientTask,
            bind=True,
            name="shop.send_receipt",
            shared=False,
            resilience={"policies": {"TRANSIENT_NETWORK": exact}},
        )
        def send_receipt(self: Any, order_id: int) -> str:
            return f"receipt {order_id}"

        # Fix: the default jitter spreads the retries over 12 seconds.
        @self.app.task(
            base=ResilientTask,
            bind=True,
            name="shop.send_receipt_jittered",
            shared=False,
            resilience={"policies": {"TRANSIENT_NETWORK": jittered}},
        )
        def send_receipt_jittered(self: Any, order_id: int) -> str:
            return f"receipt {order_id}"
