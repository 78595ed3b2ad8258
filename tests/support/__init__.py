"""Helpers the tests share: tiny models, fakes, a hub stand-in, servers and commands to run."""
