"""pynetdicom's two reactor threads per association wait for their work instead of polling.

The DUL's reactor reads the socket and writes what the association queues for it; the
association's reactor takes the messages the DUL decoded. Each sleeps a millisecond whenever it
finds nothing to do: a thousand wake-ups a second per thread, each taking the interpreter lock.
Four idle associations held 31 % of a core of the node on a 2-core machine, CPU and lock turns
that the associations doing work went without.

Once `wait_for_work` is installed on an association, those two sleeps wait for the work itself:
the DUL's until its socket is readable or another thread queues a primitive or an event for it
(a socket pair wakes its select()), the association's until the DUL queues a message or an ACSE
primitive for it. Both still wake every WAIT_AT_MOST_S for what pynetdicom checks on a clock
(ARTIM, the network timeout, a thread told to stop). Only the reactors' own sleeps change,
told apart by the code that calls them: every other sleep of pynetdicom, and every association
without `wait_for_work`, is left as it was.
"""

from __future__ import annotations

import queue
import select
import socket
import sys
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from typing import Any

import pynetdicom.association
import pynetdicom.dul
from pynetdicom.association import Association
from pynetdicom.dul import DULServiceProvider

# How late a reactor may notice a timer or a request to stop (pynetdicom's timers count seconds).
WAIT_AT_MOST_S = 0.1


class _AssociationWakeup:
    """Set when the DUL hands the association reactor a message or an ACSE primitive."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self) -> None:
        self._event.set()

    def wait(self, _pynetdicom_delay_s: float) -> None:
        self._event.wait(WAIT_AT_MOST_S)
        self._event.clear()  # a set() after this is seen: the reactor looks at its queues next


class _DulWakeup:
    """select() on the association's socket and on a socket pair another thread writes to
    when it queues something for the DUL reactor."""

    def __init__(self, dul: DULServiceProvider) -> None:
        self._dul = dul
        self._receiver, self._sender = socket.socketpair()
        self._receiver.setblocking(False)
        self._sender.setblocking(False)

    def set(self) -> None:
        with suppress(OSError):  # full: a wake-up is pending already; closed: nobody waits
            self._sender.send(b"\0")

    def wait(self, pynetdicom_delay_s: float) -> None:
        association_socket = self._dul.socket
        connected = association_socket is not None and association_socket._is_connected
        connection = association_socket.socket if connected else None
        descriptors = [self._receiver.fileno(), connection.fileno() if connection is not None else -1]
        if min(descriptors) < 0:
            # The connection is gone and the reactor about to stop: it polls as pynetdicom
            # does, and the socket pair is closed (a set() after that does nothing).
            self._close()
            time.sleep(pynetdicom_delay_s)
            return
        try:
            select.select(descriptors, [], [], WAIT_AT_MOST_S)
        except OSError:  # closed by another thread meanwhile
            time.sleep(pynetdicom_delay_s)
            return
        with suppress(OSError):
            self._receiver.recv(4096)

    def _close(self) -> None:
        self._receiver.close()
        self._sender.close()


def wait_for_work(assoc: Association) -> None:
    """Make `assoc`'s reactors wait for work; before its threads have anything to do (the
    node calls it from EVT_CONN_OPEN)."""
    dul = assoc.dul
    dul_wakeup, assoc_wakeup = _DulWakeup(dul), _AssociationWakeup()
    dul._scp_node_wakeup = dul_wakeup
    assoc._scp_node_wakeup = assoc_wakeup
    _wake_on_put(dul.to_provider_queue, dul_wakeup.set)
    _wake_on_put(dul.event_queue, dul_wakeup.set)
    _wake_on_put(dul.to_user_queue, assoc_wakeup.set)
    _wake_on_put(assoc.dimse.msg_queue, assoc_wakeup.set)
    # send_*() and release() pause the reactor and spin until it reaches its pause point.
    assoc._reactor_checkpoint.clear = _then(assoc._reactor_checkpoint.clear, assoc_wakeup.set)


def _wake_on_put(items: queue.Queue, wake: Callable[[], None]) -> None:
    items.put = _then(items.put, wake)


def _then(action: Callable[..., None], wake: Callable[[], None]) -> Callable[..., None]:
    def action_then_wake(*args: Any, **kwargs: Any) -> None:
        action(*args, **kwargs)
        wake()

    return action_then_wake


def _waking_flag(name: str) -> property:
    """A stop flag whose raising wakes the thread's reactor: pynetdicom's kill() and stop_dul()
    raise it from another thread and then wait for the reactor to end."""
    stored = f"_scp_node{name}"

    def get(thread: threading.Thread) -> bool:
        return thread.__dict__.get(stored, False)

    def set_(thread: threading.Thread, value: bool) -> None:
        thread.__dict__[stored] = value
        wakeup = getattr(thread, "_scp_node_wakeup", None)
        if value and wakeup is not None:
            wakeup.set()

    return property(get, set_)


class _TimeWithReactorWaits:
    """The `time` module as pynetdicom's dul and association modules see it: a sleep called
    by a reactor loop of a thread that has a wake-up waits on that instead."""

    _REACTOR_LOOPS = frozenset({DULServiceProvider.run_reactor.__code__, Association._run_reactor.__code__})

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    def sleep(self, seconds: float) -> None:
        wakeup = getattr(threading.current_thread(), "_scp_node_wakeup", None)
        if wakeup is not None and sys._getframe(1).f_code in self._REACTOR_LOOPS:
            wakeup.wait(seconds)
        else:
            time.sleep(seconds)


pynetdicom.dul.time = pynetdicom.association.time = _TimeWithReactorWaits()
DULServiceProvider._kill_thread = _waking_flag("_kill_thread")
Association._kill = _waking_flag("_kill")
