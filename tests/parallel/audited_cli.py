"""`netshrink ARGS` that records where this process writes: python audited_cli.py FOLDER LOG ARGS...

Every file under FOLDER opened for writing, and every rename or removal there, goes into the JSON
file LOG.RANK (outside FOLDER) when the command ends, so a test can tell which rank touched the output.
"""

import json
import os
import sys

folder, log = os.path.realpath(sys.argv[1]), f"{sys.argv[2]}.{os.environ.get('RANK', '0')}"
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT
events: list[list[str]] = []


def inside(path: object) -> bool:
    return isinstance(path, (str, os.PathLike)) and os.path.realpath(path).startswith(folder + os.sep)


def audit(event: str, args: tuple) -> None:
    if event == "open" and inside(args[0]):
        mode, flags = args[1], args[2]
        if (isinstance(flags, int) and flags & WRITE_FLAGS) or (isinstance(mode, str) and set(mode) & set("wax+")):
            events.append(["write", os.path.basename(args[0])])
    elif event in ("os.rename", "os.replace") and (inside(args[0]) or inside(args[1])):
        events.append(["rename", os.path.basename(args[1])])
    elif event == "os.remove" and inside(args[0]):
        events.append(["remove", os.path.basename(args[0])])


sys.addaudithook(audit)
from netshrink.cli import main  # noqa: E402

code = main(sys.argv[3:])
with open(log, "w") as handle:
    json.dump(events, handle)
sys.exit(code)
