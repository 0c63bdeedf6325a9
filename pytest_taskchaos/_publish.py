"""A simulated publish's message, built directly as Celery's ``send_task`` would build it.

Inside a :class:`~pytest_taskchaos.simulation.Simulation` every ``delay`` /
``apply_async`` / ``self.retry()`` reaches ``app.send_task``. Celery's own path there
(``Celery.send_task``, then ``app.amqp.as_task_v2`` for protocol 2) costs more than
running the task: about seven reads of ``app.conf`` per publish (each expands the
key into its old and new spellings and walks the chained maps), the router's
lookup of the default queue, and ``saferepr`` of the arguments for ``argsrepr`` /
``kwargsrepr``. :class:`DirectPublisher` does the same steps with those three
made cheap:

* settings are read from the configuration's maps with the key spellings expanded
  once (:class:`_Settings`), so a change to ``app.conf`` still applies to the next
  publish;
* without ``task_routes`` the route is Celery's own ``expand_destination`` of the
  options and of the default queue, without the router's settings read;
* arguments that are flat tuples, lists or dicts of ``str`` / ``int`` / ``float`` /
  ``bool`` / ``None`` get their ``argsrepr`` from :func:`saferepr`, which gives
  Celery's text for them; anything else goes to Celery's ``saferepr``.

Everything else (headers, properties, body, routed options, the parent and root
ids from the running task, ``task_inherit_parent_priority``, a registry task's
execution options) follows Celery's code step by step. What it does not build
(linked callbacks, chains and chords, ``expires``, stamped headers, a custom
``router`` or ``connection``, eager mode, protocol 1, quorum queues' native
delayed delivery, malformed arguments) it leaves to Celery: :meth:`DirectPublisher.build`
returns ``None`` and the simulation calls Celery's ``send_task``.
``tests/pytest_taskchaos/test_publish.py`` checks that both paths queue equal messages.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from functools import wraps
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from collections.abc import Callable

from celery._state import get_current_worker_task  # type: ignore[import-untyped]
from celery.app.task import Task  # type: ignore[import-untyped]
from celery.canvas import Signature  # type: ignore[import-untyped]
from celery.exceptions import Reject, Retry  # type: ignore[import-untyped]
from celery.utils.collections import lpmerge  # type: ignore[import-untyped]
from celery.utils.nodenames import anon_nodename  # type: ignore[import-untyped]
from celery.utils.quorum_queues import detect_quorum_queues  # type: ignore[import-untyped]
from celery.utils.saferepr import saferepr as celery_saferepr  # type: ignore[import-untyped]
from celery.utils.serialization import raise_with_context  # type: ignore[import-untyped]

__all__ = ["DirectPublisher", "Publish", "fast_retry", "saferepr"]

_MISSING: Final = object()

# Celery.send_task's parameters the message does not carry, or that never reach here
# (``countdown`` is turned into ``eta``; the others make build() leave the publish to
# Celery unless None).
_UNUSED: Final = (
    "producer",
    "publisher",
    "connection",
    "router",
    "expires",
    "link",
    "link_error",
    "chord",
    "chain",
    "task_type",
)

# Keywords Celery's as_task_v2 binds by position from send_task: given again as an
# option they make Celery raise TypeError, which its own path should do.
_CLASHING: Final = frozenset({"callbacks", "errbacks", "create_sent_event"})

_SETTINGS: Final = (
    "task_always_eager",
    "task_protocol",
    "task_repr_maxlevels",
    "task_inherit_parent_priority",
    "task_serializer",
    "task_default_queue",
)


@dataclass(slots=True)
class Publish:
    """What Celery's ``send_task`` hands to ``send_task_message``, and what it needs after.

    Attributes:
        task_id: the message's task id.
        headers: the protocol-2 headers (custom ``headers`` not merged yet, as Celery's).
        properties: ``correlation_id`` and ``reply_to``.
        body: ``(args, kwargs, embed)``, the caller's objects (not serialized).
        options: the routed options (``queue`` a kombu ``Queue``, ``headers``, ``priority``,
            ``serializer``, ...), as ``send_task_message`` receives them.
        ignore_result: the ``ignore_result`` option (``None`` when not given).
        result_cls: the result class asked for (``None``: the app's ``AsyncResult``).
        parent: the running worker task the result joins (``None``: none, or
            ``add_to_parent=False``).
    """

    task_id: str
    headers: dict[str, Any]
    properties: dict[str, Any]
    body: tuple[Any, Any, dict[str, Any]]
    options: dict[str, Any]
    ignore_result: Any
    result_cls: Any
    parent: Any


class _Settings:
    """Reads settings as ``app.conf[name]`` does, with each key's spellings expanded once.

    ``app.conf`` is a chain of maps; a read tries the new and the old spelling
    (``task_serializer``, ``CELERY_TASK_SERIALIZER``) in each map, first match wins.
    The maps are read at every call, so a setting changed meanwhile is seen, and a
    configuration the app replaced (``config_from_object``) is followed.
    """

    __slots__ = ("_app", "_conf", "_keys")

    def __init__(self, app: Any) -> None:
        self._app = app
        self._conf: Any = None
        self._keys: dict[str, tuple[str, ...]] = {}

    def __getitem__(self, name: str) -> Any:
        conf = self._app.conf
        if conf is not self._conf:
            self._follow(conf)
        keys = self._keys.get(name)
        if keys is not None:
            for mapping in conf.maps:
                for key in keys:
                    if key in mapping:
                        return mapping[key]
        return conf[name]

    def _follow(self, conf: Any) -> None:
        self._conf = conf
        self._keys = {}
        # Only Celery's plain configuration view is read this way; anything else
        # (a key transform, another mapping type) is asked directly.
        if getattr(conf, "key_t", None) is None and hasattr(conf, "_to_keys"):
            self._keys = {name: tuple(dict.fromkeys(conf._to_keys(name))) for name in _SETTINGS}


def saferepr(value: Any, maxlen: int, maxlevels: int) -> str:
    """``celery.utils.saferepr.saferepr(value, maxlen, maxlevels=...)``, fast for flat arguments.

    A tuple, list or dict (exact types) of ``str`` (as dict keys too), ``int``,
    ``float``, ``bool`` and ``None`` whose text fits in ``maxlen`` is rendered here
    with Celery's rules (numbers by ``str``, strings in single quotes with only
    ``'`` escaped); anything else, or a text that would be truncated, by Celery.

    Args:
        value: the arguments (a tuple or list) or keyword arguments (a dict).
        maxlen: the longest text before Celery truncates.
        maxlevels: Celery's nesting limit (a flat container is never cut by it).

    Returns:
        The text Celery puts in ``argsrepr`` / ``kwargsrepr``.
    """
    text = _flat_repr(value, maxlen)
    if text is None:
        return str(celery_saferepr(value, maxlen, maxlevels=maxlevels))
    return text


def _flat_repr(value: Any, maxlen: int | None) -> str | None:
    """Celery's saferepr text of a flat container of scalars, or None when it cannot tell."""
    kind = type(value)
    parts: list[str] = []
    if kind is tuple or kind is list:
        for item in value:
            shown = _scalar(item)
            if shown is None:
                return None
            parts.append(shown)
        inner = ", ".join(parts)
        if kind is list:
            text = f"[{inner}]"
        elif len(parts) == 1:
            text = f"({inner},)"
        else:
            text = f"({inner})"
    elif kind is dict:
        for key, item in value.items():
            shown = _scalar(item)
            if type(key) is not str or shown is None:
                return None
            parts.append(f"'{_quote(key)}': {shown}")
        text = "{" + ", ".join(parts) + "}"
    else:
        return None
    # Celery truncates only a token that reaches the length still left; a text
    # shorter than maxlen never gets there, so it is the text Celery would give.
    if maxlen is not None and len(text) >= maxlen:
        return None
    return text


def _quote(text: str) -> str:
    return text.replace("'", "\\'")


def _scalar(value: Any) -> str | None:
    kind = type(value)
    if kind is str:
        return f"'{_quote(value)}'"
    if kind is int or kind is float or kind is bool:
        # saferepr shows numbers (bool included) by str(); for these types it is repr().
        return str(value)
    if value is None:
        return "None"
    return None


def _cached(owner: Any, name: str) -> Any:
    """``owner.name`` for a kombu ``cached_property``, without its lock once computed."""
    found = vars(owner).get(name, _MISSING)
    return getattr(owner, name) if found is _MISSING else found


def _registry_defaults(app: Any, name: str, options: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """Celery.send_task for a bare name: the registry's task, its execution options as defaults.

    Returns:
        The task (or ``None``) and the options: ``options`` itself, or a new dict with
        the task's options under the given ones.
    """
    # The registry itself, not app.tasks: looking a name up must not finalize the app.
    registry = app._tasks
    get = getattr(registry, "get", None)
    if callable(get):
        task_type = get(name)
    else:
        try:
            task_type = registry[name]
        except KeyError:
            task_type = None
    if task_type is not None and hasattr(task_type, "_get_exec_options"):
        get_exec_options = task_type._get_exec_options
        found = get_exec_options() if inspect.ismethod(get_exec_options) else None
        if found:
            given = {key: value for key, value in found.items() if value is not None}
            if given:
                options = dict(given, **options)
    return task_type, options


class DirectPublisher:
    """Builds an app's task messages as ``Celery.send_task`` + ``as_task_v2`` do.

    Args:
        app: the Celery app whose ``send_task`` the simulation intercepts.
    """

    def __init__(self, app: Any) -> None:
        self.app = app
        self._settings = _Settings(app)
        # The same for every publish of this process (its pid and host name).
        self._origin: str = anon_nodename()
        self._driver_type: str | None = None

    def build(  # noqa: PLR0917 -- send_task's leading parameters, then the rest as a dict
        self, name: str, args: Any, kwargs: Any, eta: Any, task_id: Any, options: dict[str, Any]
    ) -> Publish | None:
        """The message ``app.send_task`` would publish, or ``None`` to let Celery build it.

        Args:
            name: the task's name.
            args: the positional arguments.
            kwargs: the keyword arguments.
            eta: when the message is due (an aware ``datetime``), ``None`` for now.
            task_id: the task's id.
            options: the rest of ``send_task``'s keyword arguments (not ``countdown``:
                the simulation turns it into ``eta``). Left alone when ``None`` is
                returned; otherwise taken over (the routed options are made from it).

        Returns:
            The message and what ``send_task`` does after publishing, or ``None``
            for what only Celery's own path builds (see the module's docstring).
        """
        get = options.get
        settings = self._settings
        if (
            get("connection") is not None
            or get("router") is not None
            or get("link") is not None
            or get("link_error") is not None
            or get("chain") is not None
            or get("chord") is not None
            or not task_id
            or not isinstance(task_id, str)
            or (args and not isinstance(args, list | tuple))
            or (kwargs and not isinstance(kwargs, Mapping))
            or (eta is not None and not hasattr(eta, "isoformat"))
            or "stamped_headers" in options
            or not _CLASHING.isdisjoint(options)
            or settings["task_always_eager"]
            or settings["task_protocol"] != 2
            or (eta and self._quorum())
        ):
            return None
        app = self.app
        task_type = get("task_type")
        if task_type is None:
            task_type, options = _registry_defaults(app, name, options)
        if options.get("expires") is not None:
            return None
        # From here on nothing falls back: the options are ours to change.
        pop = options.pop
        for unused in _UNUSED:
            pop(unused, None)
        result_cls = pop("result_cls", None)
        add_to_parent = pop("add_to_parent", True)
        group_id = pop("group_id", None)
        group_index = pop("group_index", None)
        retries = pop("retries", 0)
        reply_to = pop("reply_to", None)
        # An explicit time limit of None clears the task's own, as in send_task.
        time_limit = pop("time_limit", None)
        soft_time_limit = pop("soft_time_limit", None)
        root_id = pop("root_id", None)
        parent_id = pop("parent_id", None)
        route_name = pop("route_name", None)
        shadow = pop("shadow", None)
        replaced_task_nesting = pop("replaced_task_nesting", 0)
        ignore_result = pop("ignore_result", None)
        options = self._route(options, route_name or name, args, kwargs, task_type)
        parent = None
        looked = not root_id or not parent_id
        if looked:
            parent = get_current_worker_task()
            if parent:
                if not root_id:
                    root_id = parent.request.root_id or parent.request.id
                if not parent_id:
                    parent_id = parent.request.id
                if settings["task_inherit_parent_priority"]:
                    options.setdefault("priority", parent.request.delivery_info.get("priority"))
        if add_to_parent and not looked:
            parent = get_current_worker_task()
        # amqp.as_task_v2, protocol 2.
        args = args or ()
        kwargs = kwargs or {}
        amqp = _cached(app, "amqp")
        argsrepr = options.get("argsrepr")
        if argsrepr is None:
            argsrepr = self._repr(args, amqp.argsrepr_maxsize)
        kwargsrepr = options.get("kwargsrepr")
        if kwargsrepr is None:
            kwargsrepr = self._repr(kwargs, amqp.kwargsrepr_maxsize)
        headers = {
            "lang": "py",
            "task": name,
            "id": task_id,
            "shadow": shadow,
            "eta": eta and eta.isoformat(),
            "expires": None,
            "group": group_id,
            "group_index": group_index,
            "retries": retries,
            "timelimit": [time_limit, soft_time_limit],
            "root_id": root_id or task_id,
            "parent_id": parent_id,
            "argsrepr": argsrepr,
            "kwargsrepr": kwargsrepr,
            "origin": options.get("origin") or self._origin,
            "ignore_result": ignore_result,
            "replaced_task_nesting": replaced_task_nesting,
            "stamped_headers": None,
            "stamps": {},
        }
        return Publish(
            task_id=task_id,
            headers=headers,
            properties={"correlation_id": task_id, "reply_to": reply_to or app.thread_oid},
            body=(
                args,
                kwargs,
                {"callbacks": None, "errbacks": None, "chain": None, "chord": None},
            ),
            options=options,
            ignore_result=ignore_result,
            result_cls=result_cls,
            parent=parent if add_to_parent else None,
        )

    def serializer(self, options: Mapping[str, Any]) -> str:
        """The serializer a message is sent with: its ``serializer`` option, or the app's."""
        return str(options.get("serializer") or self._settings["task_serializer"])

    def _repr(self, value: Any, maxlen: int) -> str:
        """as_task_v2's saferepr of the arguments, the settings read only when needed."""
        text = _flat_repr(value, maxlen)
        if text is None:
            maxlevels = self._settings["task_repr_maxlevels"]
            return str(celery_saferepr(value, maxlen, maxlevels=maxlevels))
        return text

    def _route(
        self, options: dict[str, Any], name: str, args: Any, kwargs: Any, task_type: Any
    ) -> dict[str, Any]:
        router = _cached(_cached(self.app, "amqp"), "router")
        if router.routes:
            routed: dict[str, Any] = router.route(options, name, args, kwargs, task_type)
            return routed
        # Router.route without task_routes, the default queue's name read here.
        options = router.expand_destination(options)
        if "queue" not in options:
            default = router.expand_destination(self._settings["task_default_queue"])
            options = lpmerge(default, options)
        return options

    def _quorum(self) -> bool:
        """Whether Celery would reroute an eta to quorum queues' native delayed delivery."""
        if self._driver_type is None:
            connection = self.app.producer_pool.connections.connection
            self._driver_type = str(connection.transport.driver_type)
        return bool(detect_quorum_queues(self.app, self._driver_type)[0])


_CELERY_APPLY: Final = Task.apply_async
_SIGNATURE_APPLY: Final = Signature.apply_async


def fast_retry(app: Any, previous: Callable[..., Any], publisher: DirectPublisher) -> Any:
    """``Task.retry`` for ``app``'s worker runs, without Celery's per-publish overhead.

    Celery's ``retry`` builds the retry's signature from the request
    (``signature_from_request``), then ``Signature.apply_async`` hands its options to
    ``Task.apply_async``, which reads ``app.conf.task_always_eager`` (several
    microseconds a read) before calling ``app.send_task``. This one runs the same
    steps with Celery's own functions (the same signature, ``Retry``,
    ``MaxRetriesExceededError`` and ``Reject``, in the same order) and does
    ``Task.apply_async``'s part inline, the setting read through ``publisher``.
    Anything else goes to ``previous``: another app's task, explicit ``args`` /
    ``kwargs`` (Celery rebinds them), a direct or eager call, eager mode, old-style
    tasks. A task or signature class with its own ``apply_async`` gets it called.

    Args:
        app: the app whose tasks take this path.
        previous: the ``Task.retry`` it replaces.
        publisher: the simulation's publisher (for its settings).

    Returns:
        The function to install as ``Task.retry``.
    """
    settings = publisher._settings

    @wraps(previous)
    def retry(  # noqa: PLR0917 -- Task.retry's signature
        self: Any,
        args: Any = None,
        kwargs: Any = None,
        exc: Any = None,
        throw: bool = True,
        eta: Any = None,
        countdown: Any = None,
        max_retries: Any = None,
        **options: Any,
    ) -> Any:
        request = self.request
        if (
            self._app is not app
            or args is not None
            or kwargs is not None
            or request.called_directly
            or request.is_eager
            or self.__v2_compat__
            or settings["task_always_eager"]
        ):
            return previous(self, args, kwargs, exc, throw, eta, countdown, max_retries, **options)
        # From here on, Celery's Task.retry step by step.
        retries = request.retries + 1
        if max_retries is not None:
            self.override_max_retries = max_retries
        max_retries = self.max_retries if max_retries is None else max_retries
        if not eta and countdown is None:
            countdown = self.default_retry_delay
        sig = self.signature_from_request(
            request, args, kwargs, countdown=countdown, eta=eta, retries=retries, **options
        )
        if max_retries is not None and retries > max_retries:
            if exc:
                raise_with_context(exc)
            raise self.MaxRetriesExceededError(
                f"Can't retry {self.name}[{request.id}] args:{sig.args} kwargs:{sig.kwargs}",
                task_args=sig.args,
                task_kwargs=sig.kwargs,
            )
        ret = Retry(exc=exc, when=eta or countdown, is_eager=False, sig=sig)
        try:
            _apply_signature(sig)
        except Exception as error:  # noqa: BLE001 -- Celery turns any publish error into Reject
            # As Celery's: the publish error is the Reject's context, not its cause.
            raise Reject(error, requeue=False)  # noqa: B904 -- see above
        if throw:
            raise ret
        return ret

    return retry


def _apply_signature(sig: Any) -> Any:
    """``sig.apply_async()`` for a retry's signature: ``Task.apply_async`` inline."""
    task = sig._type
    if (
        task is None
        or type(sig).apply_async is not _SIGNATURE_APPLY
        or type(task).apply_async is not _CELERY_APPLY
    ):
        return sig.apply_async()
    args, kwargs = sig.args, sig.kwargs
    options = dict(sig.options)
    pop = options.pop
    task_id = pop("task_id", None)
    producer = pop("producer", None)
    link = pop("link", None)
    link_error = pop("link_error", None)
    shadow = pop("shadow", None)
    if task.soft_time_limit and task.time_limit and task.soft_time_limit > task.time_limit:
        raise ValueError("soft_time_limit must be less than or equal to time_limit")
    if task.typing:
        try:
            check_arguments = task.__header__
        except AttributeError:
            pass
        else:
            check_arguments(*(args or ()), **(kwargs or {}))
    shadow = shadow or task.shadow_name(args, kwargs, options)
    options = dict(task._get_exec_options(), **options)
    dump = task._dump_pydantic_arguments
    if dump is not None and options.get("serializer") != "pickle":
        args, kwargs = dump(args, kwargs)
    options.setdefault("ignore_result", task.ignore_result)
    return task._get_app().send_task(
        task.name,
        args,
        kwargs,
        task_id=task_id,
        producer=producer,
        link=link,
        link_error=link_error,
        result_cls=task.AsyncResult,
        shadow=shadow,
        task_type=task,
        **options,
    )
