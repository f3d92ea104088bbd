"""Servers of the alert target tests: a real Alertmanager, and the strict DingTalk, Slack and webhook test servers.

Each starts on 127.0.0.1 (a free port) and stops after the test. The Alertmanager fixture fails under CI=true
when the binary is missing, and skips elsewhere, saying why (tests/support/alertmanager.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.alertmanager import Alertmanager
from tests.support.dingtalk_server import DingTalkServer
from tests.support.slack_server import SlackServer
from tests.support.webhook_server import WebhookReceiver


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[Alertmanager]:
    with Alertmanager(tmp_path / "alertmanager") as am:
        yield am


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as server:
        yield server


@pytest.fixture
def dingtalk() -> Iterator[DingTalkServer]:
    with DingTalkServer() as server:
        yield server


@pytest.fixture
def slack() -> Iterator[SlackServer]:
    with SlackServer() as server:
        yield server
