"""The ground every runtime layer stands on; it imports nothing else of the runtime.

- :mod:`.fields` — typed reads from JSON a stranger wrote (:class:`~.fields.Fields`), paths confined to a folder;
- :mod:`.limits` — the resource caps on everything a stranger's file can make ringfold allocate;
- :mod:`.text_rules` — which characters a name may hold where ringfold writes it into a file another tool parses.
"""
