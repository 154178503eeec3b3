"""Banking77 intent classification (the study's `PolyAI/banking77`, read from `legacy-datasets/banking77`).

Input: a customer's message to a bank. Output: one of the 77 intent labels, as label text (e.g.
`card_arrival`). Metric: accuracy. The predicted label is matched after lower-casing and turning spaces and
hyphens into underscores, so "Card arrival" counts as `card_arrival`; anything that is not one of the 77 labels
is wrong.

Data: `PolyAI/banking77` still carries its loading script (`banking77.py`, edited there as late as the
"Remove deprecated tasks" commit 90d4e2e), which `datasets` 4.0+ refuses. `legacy-datasets/banking77` is the
same dataset converted to parquet by the hub's staff ("Convert dataset to Parquet", 11b7417): its card declares
the same `text` / `label` ClassLabel with the same 77 names in the same order (README at 62985b3), splits
10,003 / 3,080. The pinned commit is the one another project's loader downloads
`data/train-00000-of-00001.parquet` from and reads `features["label"].names` of (77 labels); the hub's file
history for `data/test-00000-of-00001.parquet` was seen at commit 9c043e5.
"""

from __future__ import annotations

from typing import Any, Literal

import dspy

from trainables.tasks.base import HubData, Splits, Task, exact_field, feedback_metric, versioned

VERSION = "2"

# The dataset's ClassLabel names in id order (its schema, as `features["label"].names` gives them).
LABELS: tuple[str, ...] = (
    "activate_my_card", "age_limit", "apple_pay_or_google_pay", "atm_support", "automatic_top_up",
    "balance_not_updated_after_bank_transfer", "balance_not_updated_after_cheque_or_cash_deposit",
    "beneficiary_not_allowed", "cancel_transfer", "card_about_to_expire", "card_acceptance", "card_arrival",
    "card_delivery_estimate", "card_linking", "card_not_working", "card_payment_fee_charged",
    "card_payment_not_recognised", "card_payment_wrong_exchange_rate", "card_swallowed", "cash_withdrawal_charge",
    "cash_withdrawal_not_recognised", "change_pin", "compromised_card", "contactless_not_working", "country_support",
    "declined_card_payment", "declined_cash_withdrawal", "declined_transfer", "direct_debit_payment_not_recognised",
    "disposable_card_limits", "edit_personal_details", "exchange_charge", "exchange_rate", "exchange_via_app",
    "extra_charge_on_statement", "failed_transfer", "fiat_currency_support", "get_disposable_virtual_card",
    "get_physical_card", "getting_spare_card", "getting_virtual_card", "lost_or_stolen_card", "lost_or_stolen_phone",
    "order_physical_card", "passcode_forgotten", "pending_card_payment", "pending_cash_withdrawal", "pending_top_up",
    "pending_transfer", "pin_blocked", "receiving_money", "Refund_not_showing_up", "request_refund",
    "reverted_card_payment?", "supported_cards_and_currencies", "terminate_account", "top_up_by_bank_transfer_charge",
    "top_up_by_card_charge", "top_up_by_cash_or_cheque", "top_up_failed", "top_up_limits", "top_up_reverted",
    "topping_up_by_card", "transaction_charged_twice", "transfer_fee_charged", "transfer_into_account",
    "transfer_not_received_by_recipient", "transfer_timing", "unable_to_verify_identity", "verify_my_identity",
    "verify_source_of_funds", "verify_top_up", "virtual_card_not_working", "visa_or_mastercard",
    "why_verify_identity", "wrong_amount_of_cash_received", "wrong_exchange_rate_for_cash_withdrawal",
)  # fmt: skip
DATA = HubData(
    "legacy-datasets/banking77",
    "f54121560de48f2852f90be299010d1d6dc612ec",
    None,
    sample_dir="banking77",
    pool_split="train",
    test_split="test",
    columns=("text", "label"),
    labels=(("label", LABELS),),
)
_CANONICAL = {label.lower().rstrip("?"): label for label in LABELS}

Intent = Literal[LABELS]  # type: ignore[valid-type]


class ClassifyIntent(dspy.Signature):
    """Classify the bank customer's message into exactly one of the listed intents."""

    text: str = dspy.InputField(desc="the customer's message")
    label: Intent = dspy.OutputField(desc="one intent label, copied exactly")


def canonical_label(text: Any) -> str | None:
    """The Banking77 label that `text` names (case, spaces, hyphens and a trailing `?` forgiven), else None."""
    if text is None:
        return None
    key = str(text).strip().strip("\"'`.").lower().replace(" ", "_").replace("-", "_").rstrip("?")
    return _CANONICAL.get(key)


def metric(example: dspy.Example, pred: Any, trace: Any = None) -> float:
    """1.0 if the predicted label is the gold label."""
    return float(canonical_label(getattr(pred, "label", None)) == example.label)


def _explain(example: dspy.Example, pred: Any, label: Any, score: float) -> str:
    """The gold intent, and whether the reply named a known label at all."""
    named = canonical_label(label)
    if named is None:
        return (
            f"The `label` field ({str(label)[:80]!r}) is not one of the {len(LABELS)} intent labels; "
            f"the correct intent is {example.label}. Answer with one label exactly as listed."
        )
    if score:
        return f"Correct intent: {example.label}."
    return f"Predicted intent {named}, but the correct intent is {example.label}."


feedback = feedback_metric(metric, "label", _explain, lambda ex: f"The correct intent is {ex.label}.")


def _to_example(row: dict[str, Any], idx: int, split: str) -> dspy.Example:
    return dspy.Example(id=f"{split}-{idx}", text=row["text"], label=LABELS[int(row["label"])]).with_inputs("text")


def load(source: str, seed: int, n_labeled: int, n_val: int, n_eval: int) -> Splits:
    """Banking77's train split feeds train and val; its test split is the reported test set."""
    return DATA.splits(_to_example, source, seed, n_labeled, n_val, n_eval)


def program(splits: Splits) -> dspy.Module:
    return dspy.Predict(ClassifyIntent)


TASK = Task(
    test_split=3_080,
    name="classification", version=versioned(VERSION, DATA), load=load, program=program, metric=metric, data=(DATA,),
    feedback=feedback,
    metric_name="accuracy",
    strict=exact_field("label"),
    expected=("label",),
)  # fmt: skip
