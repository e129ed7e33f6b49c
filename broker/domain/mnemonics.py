"""An information system's mnemonic (EJX, EPGU, RSMEV): one rule for every place that names one.

It is the envelope schema's MnemonicType. Routing's recipients, an envelope's Sender and
Recipient, SMEV 3 participants (whose queue is read under their mnemonic) and EJX_SENDER all
follow it: a name one of them accepted and another refused sent every event to the DLQ, or
filled a queue nobody could register to read.
"""

from __future__ import annotations

import re

from broker.domain.faults import InvalidContent

RULE = r"[A-Z0-9][A-Z0-9_\-]{1,63}"
"""2–64 capital letters, digits, '_' or '-', not starting with '_' or '-'."""
_PATTERN = re.compile(RULE, re.ASCII)


def mnemonic(value: str, what: str = "") -> str:
    """``value`` if it is a mnemonic, else InvalidContent naming ``what`` it was meant to be, if said."""
    if not _PATTERN.fullmatch(value):
        raise InvalidContent(f"{what + ' ' if what else ''}{value!r} is not a mnemonic (2-64 capital letters, "
                             "digits, '_' or '-', not starting with '_' or '-')")
    return value
