"""The domain's branch of the exception tree: every refusal of a command is one of these."""

from urbana.errors import UrbanaError


class DomainError(UrbanaError):
    """A command was refused by the model; nothing was recorded."""

    code = "domain_error"


class InvalidInput(DomainError):
    """The command's data is malformed (empty text, bad phone, unknown channel...)."""

    code = "invalid_input"


class NotFound(DomainError):
    """No aggregate (tenant, conversation, lead...) has that id."""

    code = "not_found"


class InvalidTransition(DomainError):
    """The conversation's state does not allow this command."""

    code = "invalid_transition"


class AIReplyNotAllowed(InvalidTransition):
    """The AI may not reply now (a human owns the conversation, or it is closed)."""

    code = "ai_reply_not_allowed"


class BurstAlreadyAnswered(InvalidTransition):
    """The AI already replied to this inbound burst (one reply per burst)."""

    code = "burst_already_answered"


class StaleStatus(DomainError):
    """A delivery status that does not move the message forward."""

    code = "stale_status"


class StatusAlreadyHeld(StaleStatus):
    """This status of a message not known yet is already held: a redelivered webhook."""

    code = "status_already_held"


class UnknownMessage(DomainError):
    """The outbound message id is not part of this conversation."""

    code = "unknown_message"


class AlreadyTaken(DomainError):
    """A natural key (a channel route, an email) already belongs to someone else."""

    code = "already_taken"


class AlreadyConnected(AlreadyTaken):
    """The channel route (phone number id, instance, secret) belongs to another tenant."""

    code = "already_connected"


class AlreadyAssigned(InvalidTransition):
    """Another attendant holds the conversation: take it over by a transfer, not an assign."""

    code = "already_assigned"


class NotAssignee(InvalidTransition):
    """Only the attendant holding the conversation (or a supervisor) may do this."""

    code = "not_assignee"


class TemplateRequired(InvalidTransition):
    """WhatsApp's 24-hour window is closed: only an approved template may be sent."""

    code = "template_required"


class EmailTaken(AlreadyTaken):
    """Another user already signs in with that email (emails are unique across tenants)."""

    code = "email_taken"


class NotAuthenticated(DomainError):
    """The credentials do not name an active user or API key (wrong, expired, disabled,
    revoked): the caller is told nothing more."""

    code = "not_authenticated"
