"""What becomes of a bounce once it is in: read (``mailer.bounces``), tied to the delivery it
is about, stored once, counted against the address with decay, and suppressions made; one
code path for the listener, IMAP, the relay webhooks and ``mailer bounces import``."""
