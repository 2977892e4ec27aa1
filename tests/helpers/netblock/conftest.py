"""This folder holds helpers run in a subprocess, not tests: importing ``sitecustomize`` here
(as ``--doctest-modules`` would) would block the network of the whole test session."""

collect_ignore_glob = ["*.py"]
