"""gradguard's messages in the words of the command line.

:func:`gradguard.check` speaks Python (``use direction='rev'``, ``grad=fn``,
``check at another x``); someone who typed ``gradguard check`` knows flags
and the names in their file. :func:`in_flag_words` rewrites the one into
the other.
"""

from __future__ import annotations

import re

__all__ = ["in_flag_words"]

#: check()'s parameter names that are flags of ``gradguard check`` as they are.
FLAGS = ("wrt", "eps", "rtol", "atol", "probes", "seed", "mode", "direction", "order")


def in_flag_words(message: str, function: str, file: str) -> str:
    """``message`` with check()'s keywords as flags and f, grad=, vjp= as the
    names defined in ``file`` (``function`` is the target as typed)."""
    text = message
    grad, vjp = f"{function}_grad", f"{function}_vjp"
    replacements = [
        # Keyword values: direction='rev' -> --direction rev, order=2 -> --order 2.
        (r"\b(" + "|".join(FLAGS) + r")='([^']*)'", r"--\1 \2"),
        (r"\b(" + "|".join(FLAGS) + r")=(\w+)", r"--\1 \2"),
        # A message about one option starts with its name.
        (r"^(" + "|".join(FLAGS) + r"): ", r"--\1: "),
        # The analytical rules are functions in the file.
        (r"grad=fn \(fn\(\*args\) returns", f"{grad}(*args) (it returns"),
        (r"vjp=fn \(fn\(cotangent, \*args\) returns", f"{vjp}(cotangent, *args) (it returns"),
        (r"vjp=fn \(fn\(cotangent, \*args\)\)", f"{vjp}(cotangent, *args)"),
        (r"pass the analytical derivative as ", f"define the derivative in {file}: "),
        (r"grad= and vjp= rules", f"{grad} and {vjp} rules"),
        (r"\bgrad=/vjp=", f"{grad} / {vjp}"),
        (r"\bgrad=", grad),
        (r"\bvjp=", vjp),
        (r"^grad, vjp: ", f"{grad}, {vjp}: "),
        (r"^grad: ", f"{grad}: "),
        (r"^vjp: ", f"{vjp}: "),
        (r"^f: ", f"{function}: "),
        (
            r"(?<![\w.=-])f(?= (returned|has|uses|modifies|must|is|finite|accepts|refuses)\b|[),])",
            function,
        ),
        (
            r"check at another x",
            "check at another point: --range LOW,HIGH (e.g. --range 0.5,2 for a log), "
            "--seed N, or --inputs FILE.npy",
        ),
    ]
    for pattern, replacement in replacements:
        text = re.sub(pattern, replacement, text)
    return text
