"""Jeroboam's orchestration engine: HOT-subset templates run as stacks of resources.

- template.py / functions.py: parse and validate templates (errors: TemplateError with a path)
- graph.py: the dependency graph, its cycles and ready sets
- resources/: the plugin interface and the built-in resource types (entry points
  `jeroboam.orchestration.resources`)
- engine.py: stack actions over a Store (store.py: records and an in-memory store;
  sql_store.py: the service database)
- actions.py: the Tasks API actions stack.create / stack.update / stack.delete
"""
