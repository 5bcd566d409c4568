"""Who may call what: roles and their scopes, and the scope each RPC needs.

This is the one declarative table of access. A method missing here is closed to everyone
(deny by default); `PUBLIC_METHOD_PREFIXES` are open without a token.
"""

from __future__ import annotations

ACCOUNTS = "/membership.accounts.v1.AccountsService/"
PRIVACY_CRYPTO = "/membership.privacy.v1.FieldCryptoService/"
PRIVACY_CONSENT = "/membership.privacy.v1.ConsentService/"
PRIVACY_AUDIT = "/membership.privacy.v1.AuditService/"
PRIVACY_RIGHTS = "/membership.privacy.v1.DataRightsService/"
POINTS = "/membership.points.v1.PointsService/"
PROMOTIONS = "/membership.points.v1.PromotionsService/"

# Reading a member in the FULL view needs this scope in addition to the method's scope.
SCOPE_READ_PII = "accounts.members.read_pii"

METHOD_SCOPES: dict[str, str] = {
    ACCOUNTS + "RegisterMember": "accounts.members.create",
    ACCOUNTS + "GetMember": "accounts.members.read",
    ACCOUNTS + "LookupMember": "accounts.members.read",
    # listing every member is back-office work, not for an app acting for one member
    ACCOUNTS + "ListMembers": "accounts.members.list",
    ACCOUNTS + "UpdateMember": "accounts.members.update",
    ACCOUNTS + "FreezeMember": "accounts.members.freeze",
    ACCOUNTS + "UnfreezeMember": "accounts.members.freeze",
    ACCOUNTS + "CloseMember": "accounts.members.close",
    ACCOUNTS + "ExportMemberData": "accounts.internal.privacy",
    ACCOUNTS + "EraseMemberData": "accounts.internal.privacy",
    POINTS + "SettlePayment": "points.payments.settle",
    POINTS + "SettlePayments": "points.payments.settle",
    # refunds come from the same payment system that settles payments
    POINTS + "RefundPayment": "points.payments.settle",
    POINTS + "GrantPoints": "points.points.grant",
    POINTS + "GetBalance": "points.balance.read",
    POINTS + "GetTierProgress": "points.balance.read",
    POINTS + "ListTransactions": "points.balance.read",
    POINTS + "ExplainTransaction": "points.balance.read",
    POINTS + "ListRewards": "points.balance.read",
    # proving the whole ledger is back-office work; it reads every member's points
    POINTS + "Reconcile": "points.ledger.reconcile",
    # spending acts for the member: the wallet backend (and the back office) redeems
    POINTS + "HoldPoints": "points.points.spend",
    POINTS + "CapturePoints": "points.points.spend",
    POINTS + "ReleaseHold": "points.points.spend",
    POINTS + "RedeemPoints": "points.points.spend",
    POINTS + "RedeemReward": "points.points.spend",
    POINTS + "ApplyMemberEvents": "points.internal.members",
    POINTS + "ExportMemberLedger": "points.internal.privacy",
    POINTS + "StreamMemberLedger": "points.internal.privacy",
    POINTS + "RestrictMember": "points.internal.privacy",
    POINTS + "ApplyProcessingEvents": "points.internal.privacy",
    # the rules applying to a member, for an explanation request (PIPL Art. 48)
    POINTS + "ExplainMemberRules": "points.internal.privacy",
    # the program in force (tiers, earn rates, windows): what the app shows every member
    POINTS + "GetProgram": "points.program.read",
    # campaigns change what payments earn: the membership team's work, and the admins'
    PROMOTIONS + "CreateCampaign": "points.campaigns.manage",
    PROMOTIONS + "UpdateCampaign": "points.campaigns.manage",
    PROMOTIONS + "ActivateCampaign": "points.campaigns.manage",
    PROMOTIONS + "EndCampaign": "points.campaigns.manage",
    # a simulation reads every member's payments of a period, in aggregate
    PROMOTIONS + "SimulateCampaign": "points.campaigns.manage",
    PROMOTIONS + "GetCampaign": "points.campaigns.read",
    PROMOTIONS + "ListCampaigns": "points.campaigns.read",
    PROMOTIONS + "CreateCouponTemplate": "points.campaigns.manage",
    PROMOTIONS + "IssueCoupons": "points.campaigns.manage",
    PROMOTIONS + "GetCouponTemplate": "points.campaigns.read",
    PROMOTIONS + "ListCouponTemplates": "points.campaigns.read",
    # a member's wallet is read like its balance; using a coupon acts for the member
    PROMOTIONS + "ListMemberCoupons": "points.balance.read",
    PROMOTIONS + "ReserveCoupon": "points.points.spend",
    PROMOTIONS + "ReleaseCoupon": "points.points.spend",
    # taking a member's coupon back is the back office's, like a goodwill grant above its cap
    PROMOTIONS + "RevokeCoupon": "points.ledger.reconcile",
    # the checkout asks for the member, before it pays
    PROMOTIONS + "QuoteCheckout": "points.points.spend",
    PRIVACY_CRYPTO + "EncryptFields": "privacy.crypto.encrypt",
    PRIVACY_CRYPTO + "ComputeBlindIndex": "privacy.crypto.encrypt",
    PRIVACY_CRYPTO + "DecryptFields": "privacy.crypto.decrypt",
    PRIVACY_CRYPTO + "RotateKeyEncryptionKey": "privacy.keys.admin",
    PRIVACY_CRYPTO + "GetKeyRingStatus": "privacy.keys.admin",
    PRIVACY_CRYPTO + "DestroySubjectKey": "privacy.keys.destroy",
    PRIVACY_CONSENT + "ListPurposes": "privacy.consent.read",
    PRIVACY_CONSENT + "GetConsents": "privacy.consent.read",
    PRIVACY_CONSENT + "CheckConsent": "privacy.consent.read",
    # counts over every member: for compliance, not for acting on one member
    PRIVACY_CONSENT + "GetConsentStatistics": "privacy.consent.statistics",
    # consent changes act for the member: through the app, the web site or a counter
    PRIVACY_CONSENT + "GrantConsent": "privacy.consent.write",
    PRIVACY_CONSENT + "WithdrawConsent": "privacy.consent.write",
    # the audit log is for compliance officers and administrators: it names who read whose
    # fields, and verifying the chain reads all of it
    PRIVACY_AUDIT + "ListAuditEvents": "privacy.audit.read",
    PRIVACY_AUDIT + "VerifyAuditChain": "privacy.audit.read",
    # data-subject requests come in through the app or an officer; the member's own status
    # is shown in the app, the queue only to officers
    PRIVACY_RIGHTS + "CreateDataRequest": "privacy.requests.create",
    PRIVACY_RIGHTS + "GetDataRequest": "privacy.requests.read",
    PRIVACY_RIGHTS + "CancelDataRequest": "privacy.requests.cancel",
    PRIVACY_RIGHTS + "ListDataRequests": "privacy.requests.list",
    # the code goes to the member through the app's signed-in session
    PRIVACY_RIGHTS + "IssueVerificationCode": "privacy.requests.issue_code",
    PRIVACY_RIGHTS + "VerifyIdentity": "privacy.requests.verify",
    PRIVACY_RIGHTS + "ApproveDataRequest": "privacy.requests.manage",
    PRIVACY_RIGHTS + "RejectDataRequest": "privacy.requests.manage",
    PRIVACY_RIGHTS + "ExtendDataRequestDeadline": "privacy.requests.manage",
    PRIVACY_RIGHTS + "DownloadExport": "privacy.exports.download",
}

ROLE_SCOPES: dict[str, frozenset[str]] = {
    # the wallet app's backend acts for the member: register, read masked, update, cancel
    "wallet-backend": frozenset(
        {
            "accounts.members.create",
            "accounts.members.read",
            "accounts.members.update",
            "accounts.members.close",
            "points.balance.read",
            "points.program.read",
            "points.points.spend",
            # check-in and task rewards, small goodwill
            "points.points.grant",
            "privacy.consent.read",
            "privacy.consent.write",
            "privacy.requests.create",
            "privacy.requests.read",
            "privacy.requests.cancel",
            "privacy.requests.issue_code",
            "privacy.requests.verify",
            "privacy.exports.download",
        }
    ),
    # the payment system settles payments into points
    "settlement": frozenset({"points.payments.settle"}),
    # compliance officers read and list members, in clear when they state a purpose
    "officer": frozenset(
        {
            "accounts.members.read",
            "accounts.members.list",
            SCOPE_READ_PII,
            "points.balance.read",
            "points.program.read",
            "privacy.consent.read",
            "privacy.audit.read",
            "privacy.consent.statistics",
            "privacy.requests.create",
            "privacy.requests.read",
            "privacy.requests.cancel",
            "privacy.requests.list",
            "privacy.requests.verify",
            "privacy.requests.manage",
            "privacy.exports.download",
            "points.campaigns.read",
        }
    ),
    "admin": frozenset(
        {
            "accounts.members.read",
            "accounts.members.list",
            SCOPE_READ_PII,
            "accounts.members.update",
            "accounts.members.freeze",
            "accounts.members.close",
            "privacy.keys.admin",
            "privacy.audit.read",
            "privacy.consent.statistics",
            "points.balance.read",
            "points.program.read",
            "points.ledger.reconcile",
            "points.points.spend",
            "points.points.grant",
            "points.campaigns.manage",
            "points.campaigns.read",
            "privacy.consent.read",
            "privacy.consent.write",
        }
    ),
    # the membership team runs the program's promotions: no member's data, no points moved
    "marketing": frozenset(
        {"points.program.read", "points.campaigns.manage", "points.campaigns.read"}
    ),
    # internal: privacy reaches into accounts and points for data-subject requests and
    # shreds keys
    "service:privacy": frozenset(
        {
            "accounts.internal.privacy",
            "accounts.members.read",
            "privacy.crypto.encrypt",
            "privacy.crypto.decrypt",
            "privacy.keys.destroy",
            # points: export a member's ledger, restrict it after erasure
            "points.internal.privacy",
            # data-subject requests: correction, explanation of transactions
            "accounts.members.update",
            "points.balance.read",
        }
    ),
    # internal: accounts encrypts, indexes and (for FULL reads and exports) decrypts fields,
    # and its outbox relay tells points about members
    "service:accounts": frozenset(
        {
            "privacy.crypto.encrypt",
            "privacy.crypto.decrypt",
            "points.internal.members",
            # consents given at registration, and the state shown with a member
            "privacy.consent.read",
            "privacy.consent.write",
        }
    ),
    # internal: points checks consent before processing that needs it (payment records)
    "service:points": frozenset({"privacy.consent.read"}),
}

PUBLIC_METHOD_PREFIXES = (
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
)


def is_public(method: str) -> bool:
    return method.startswith(PUBLIC_METHOD_PREFIXES)


def required_scope(method: str) -> str | None:
    return METHOD_SCOPES.get(method)
