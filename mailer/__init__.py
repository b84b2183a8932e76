"""mailer: an asynchronous newsletter and announcement mailer."""

__version__ = "0.1.0"
