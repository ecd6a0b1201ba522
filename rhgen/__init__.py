"""rhgen: keeps HAProxy routing in step with running containers."""

import atexit
import gc

__version__ = "0.1.0"

# At the process's end, every object left is frozen out of the cyclic collector: the interpreter's
# finalization would otherwise collect over all of them (every module, class and function of
# click, requests, Jinja2 ...) again and again, about 80 ms of every `rhgen generate`, and free
# nothing that the end of the process does not. Only at exit: a long `rhgen watch` collects as ever.
atexit.register(gc.freeze)
