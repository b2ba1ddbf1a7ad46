"""Risk for an imported seller: the given risk, or the documented model over its signals."""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import ValidationError

from chalicelib.domain.errors import InvalidInput
from chalicelib.domain.models import SellerSignals
from chalicelib.domain.risk import RiskModel


def risk_for(
    risk: float | None, signals: SellerSignals | Mapping[str, object] | None, model: RiskModel | None = None
) -> float:
    """``risk`` if given (already in (0,1) by validation), else the model score over ``signals`` with the seller's
    own test-buy history folded in. Neither given is an error."""
    if risk is not None:
        return risk
    if signals is None:
        raise InvalidInput("give either risk or signals for every seller")
    try:
        parsed = signals if isinstance(signals, SellerSignals) else SellerSignals.model_validate(dict(signals))
    except ValidationError as exc:
        raise InvalidInput(
            "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        ) from None
    return (model or RiskModel()).score_with_history(parsed)
