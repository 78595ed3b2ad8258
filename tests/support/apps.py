"""The server's app as the modes build it: create_app with the defaults runtime/plan.py resolves."""

from __future__ import annotations

from llmpack.runtime.flags.settings import Settings
from llmpack.runtime.plan import Plan, resolve
from llmpack.runtime.server.app import create_app


def server_plan(settings: Settings) -> Plan:
    return resolve(settings, "server")


def app_for(settings: Settings, holder, **kwargs):
    return create_app(settings, holder, server_plan(settings).server_sampling, **kwargs)
