"""The stateful code interpreter: Jupyter kernels inside a sandbox, driven through the agent.

- `driver.py` runs inside the sandbox (never imported here): it owns the kernels.
- `session.Interpreter` is the node side: it starts the driver in a sandbox and
  multiplexes executions and contexts over the driver's stdin/stdout.
- `session.interpreter_for(registry, sandbox)` finds or starts a sandbox's interpreter.
"""

from sandlot.interpreter.session import DEFAULT_CONTEXT, Interpreter, interpreter_for

__all__ = ["DEFAULT_CONTEXT", "Interpreter", "interpreter_for"]
