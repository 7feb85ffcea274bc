"""The hostile-input and fault corpus (issue 17): bad files, bad settings, bad file systems, against every skin.

A package, so that its conftest and its modules never shadow the suite's own (tests/conftest.py stays `conftest`).
"""
