"""How the sweep chooses on the validation set (pure: results in, name out): a method's
setting among its tuning tries, and the strongest baseline that gets more seeds.

Every method gets the same small budget of tries at the first K of the sweep (K = 16), scored
on the validation set only; the test set never chooses anything.

* ``valid``: the try with the best valid sacreBLEU, used at every K and seed.
* ``own_count``: for methods that do not aim at a K (Voita's L0 penalty sets how many heads
  survive), per K the try whose own kept count (heads with z > 0.5 at the end of its fine-tune)
  is the smallest at or above K, so that cutting it to exactly K (the K largest log_alpha)
  removes the fewest heads it kept; when no try keeps K heads, the one keeping the most.
  Ties go to the better valid sacreBLEU.

The strongest baseline (:func:`strongest`): among the configured baselines' runs at one K,
the method with the best valid sacreBLEU; the sweep then runs it with more seeds.
"""
from typing import Dict

CHOICES = ("valid", "own_count")


def _valid(result: dict) -> float:
    return result.get("valid", {}).get("sacrebleu", float("-inf"))


def choose_try(results: Dict[str, dict], choose: str, target_heads: int) -> str:
    """The chosen try's name among ``results`` (try name -> its tuning run's result)."""
    if not results:
        raise ValueError("no tuning runs to choose from")
    if choose == "valid":
        return max(results, key=lambda t: _valid(results[t]))
    if choose == "own_count":
        counts = {t: r["own_kept"] for t, r in results.items()}
        enough = [t for t in results if counts[t] >= target_heads]
        if enough:
            return min(enough, key=lambda t: (counts[t], -_valid(results[t])))
        return max(results, key=lambda t: (counts[t], _valid(results[t])))
    raise ValueError(f"choose: {choose!r} is not one of {', '.join(CHOICES)}")


def strongest(results: Dict[str, dict]) -> str:
    """The method with the best valid sacreBLEU among ``results`` (method -> its run's result)."""
    if not results:
        raise ValueError("no runs to choose the strongest baseline from")
    return max(results, key=lambda m: _valid(results[m]))
