"""Logical record kinds (docs/INTERFACES.md §2): storage frames them, florql gives them meaning.

>>> RUN_BEGIN, VALUE, CKPT_END
(1, 3, 17)
>>> NAMES[VALUE]
'VALUE'
"""

from __future__ import annotations

RUN_BEGIN = 1
RUN_END = 2
VALUE = 3
LOOP = 4
LOOP_END = 5
RNG = 6
STATE = 7
RUN_RESUME = 8
REPLAY_BEGIN = 9
REPLAY_END = 10
CKPT_BEGIN = 16
CKPT_END = 17
CKPT_DROP = 18  # written by `florql check --repair`: a checkpoint whose pages are damaged

NAMES = {
    RUN_BEGIN: "RUN_BEGIN",
    RUN_END: "RUN_END",
    VALUE: "VALUE",
    LOOP: "LOOP",
    LOOP_END: "LOOP_END",
    RNG: "RNG",
    STATE: "STATE",
    RUN_RESUME: "RUN_RESUME",
    REPLAY_BEGIN: "REPLAY_BEGIN",
    REPLAY_END: "REPLAY_END",
    CKPT_BEGIN: "CKPT_BEGIN",
    CKPT_END: "CKPT_END",
    CKPT_DROP: "CKPT_DROP",
}

# Kinds written only by the storage layer itself; LogWriter.append refuses them.
INTERNAL = frozenset({CKPT_BEGIN, CKPT_END, CKPT_DROP})
