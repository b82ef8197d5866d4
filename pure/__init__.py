"""pure: PURE (Perceive, Understand and Restore) real-world image super-resolution."""

import logging

__version__ = "0.1.0"


class _EnumConstantNotice(logging.Filter):
    """Drops torch 2.14's notice, logged twice whenever torchao is imported (transformers and peft import it
    when it is installed, as ``--quantize`` needs), that registering an Enum as a pytree constant is
    deprecated: a note to torchao's authors that asks nothing of a user."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "is an Enum subclass and is now natively supported" not in record.getMessage()


logging.getLogger("torch.utils._pytree").addFilter(_EnumConstantNotice())
