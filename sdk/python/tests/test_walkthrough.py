"""README.md's walkthrough (PixelForge) through the Python client against the real binary, with
generation written as an app would: `with vevee.reservation(...)` around the provider call. Only
the image provider and the UI are stand-ins. It has a server of its own: it moves the test clock."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from vevee import Denial, Denied, Reservation, Vevee

from .support import DALLE, GEMINI, PUBLISHABLE_KEY, SECRET_KEY, RunningServer, start_server

MONTH = 2_678_400  # 31 days, as in the README


class ProviderTimeout(Exception):
    pass


@dataclass
class PixelForge:
    """The app's generation path: hold, call the provider, commit what it made."""

    vevee: Vevee
    offers: list[tuple[str, list[str]]] = field(default_factory=list)
    made: list[str] = field(default_factory=list)

    def generate(self, user_id: str, model: str, prompt: str, images: int = 1) -> int:
        """Images made (maybe fewer than asked: only those are paid for), 0 on a denial."""
        try:
            with self.vevee.reservation(user_id, model, images) as hold:
                if prompt.startswith("timeout"):
                    raise ProviderTimeout(prompt)
                made = images - prompt.count("(nsfw)")
                self.made.extend(f"{model}:{prompt}" for _ in range(made))
                hold.commit(amount=made, response={"images": made})
                return made
        except Denied as denied:
            offer = "upgrade" if "plan_exhausted" in denied.reasons else "credits"
            self.offers.append((offer, denied.reasons))
            return 0


@pytest.fixture(scope="module")
def own_server() -> Iterator[RunningServer]:
    running = start_server()
    yield running
    running.stop()


def test_the_walkthrough(own_server: RunningServer) -> None:
    vevee = Vevee(SECRET_KEY, base_url=own_server.base_url)
    app = PixelForge(vevee)

    # The catalog, readable with the publishable key.
    with Vevee(PUBLISHABLE_KEY, base_url=own_server.base_url) as page:
        plans = {p.id: p for p in page.plans.list().data}
    assert [(lim.match, lim.limit, lim.period) for lim in plans["free"].limits] == [
        ([GEMINI], 2, "lifetime")
    ]
    assert [(lim.match, lim.limit, lim.period) for lim in plans["pro"].limits] == [
        (["image.*"], 40, "month")
    ]
    packs = {p.id: p for p in vevee.credit_packs.list().data}
    assert [(i.match, i.amount) for i in packs["cpk_gemini_topup"].items] == [(GEMINI, 50)]
    assert packs["cpk_gemini_topup"].expires_in_days is None
    assert packs["cpk_creator_bundle"].expires_in_days == 90

    # A Free user spends the free images: reserve + commit, then consume, then a denial.
    vevee.upsert_subscription("ana", "free")
    hold = vevee.reserve("ana", GEMINI, 1)
    assert isinstance(hold, Reservation)
    assert [(a.source, a.limit_id, a.amount) for a in hold.allocations] == [("plan", "images", 1)]
    vevee.commit(hold.reservation_id)
    assert vevee.consume("ana", GEMINI, 1).allowed
    denied = vevee.reserve("ana", GEMINI, 1)
    assert isinstance(denied, Denial)
    assert denied.reasons == ["plan_exhausted"]
    assert app.generate("ana", GEMINI, "a fox") == 0
    assert app.offers[-1] == ("upgrade", ["plan_exhausted"])

    # She buys the Gemini top-up: the next image is paid by credits.
    grant = vevee.credits.grant("ana", "cpk_gemini_topup", "cs_test_1", source="purchase")
    topup = grant.balances[0]
    assert (topup.granted, topup.remaining, topup.expires_at) == (50, 50, None)
    spent = vevee.consume("ana", GEMINI, 1)
    assert isinstance(spent, Reservation)
    assert [(a.source, a.balance_id) for a in spent.allocations] == [("credits", topup.id)]
    assert app.generate("ana", DALLE, "a fox") == 0
    assert app.offers[-1] == ("credits", ["not_in_plan"])

    # A provider error releases every unit to the balance it came from.
    with pytest.raises(ProviderTimeout):
        app.generate("ana", GEMINI, "timeout: the model is down", images=3)
    assert vevee.credits.get_balance(topup.id).remaining == 49
    released = [e for e in vevee.ledger("ana") if e.type == "usage.released"]
    assert [(e.amount, e.reason) for e in released] == [(3, "ProviderTimeout")]

    # Commit less than reserved: 3 asked, 2 delivered, 2 paid.
    assert app.generate("ana", GEMINI, "two cats and one (nsfw)", images=3) == 2
    assert vevee.credits.get_balance(topup.id).remaining == 47

    # Usage for the UI and the ledger for support.
    usage = vevee.usage("ana", "image.*")
    assert [(c.limit_id, c.used, c.remaining) for c in usage.counters] == [("images", 2, 0)]
    assert [(b.id, b.remaining, b.reserved) for b in usage.credits] == [(topup.id, 47, 0)]
    entries = list(vevee.ledger("ana", limit=20))
    committed = sum(e.amount or 0 for e in entries if e.type == "usage.committed")
    assert committed == 2 + 1 + 2, "two plan images, one credit, the partial commit of 2"
    assert entries[-1].type == "subscription.updated", "oldest last"

    # Upgrade, cancel (credits stay spendable), refund.
    pro = vevee.upsert_subscription("ana", "pro")
    assert pro.plan_id == "pro"
    assert vevee.usage("ana", "image.*").counters[0].remaining == 40
    assert app.generate("ana", DALLE, "a fox on pro") == 1
    assert vevee.cancel_subscription("ana").status == "canceled"
    assert vevee.usage("ana").counters == []
    after_cancel = vevee.consume("ana", GEMINI, 1)
    assert isinstance(after_cancel, Reservation)
    assert after_cancel.allocations[0].balance_id == topup.id
    refunded = vevee.credits.revoke(topup.id, reason="refund")
    assert (refunded.status, refunded.remaining) == ("revoked", 0)
    gone = vevee.check("ana", GEMINI, 1)
    assert (gone.allowed, gone.reasons) == (False, ["no_subscription", "credits_exhausted"])

    # The test clock: a 90-day bundle expires after three 31-day months.
    bundle = vevee.credits.grant("ana", "cpk_creator_bundle", "cs_test_2", source="purchase")
    assert {b.status for b in bundle.balances} == {"active"}
    for _ in range(3):
        vevee.test_clock.advance(MONTH)
    expired = [vevee.credits.get_balance(b.id) for b in bundle.balances]
    assert [(b.status, b.remaining) for b in expired] == [("expired", 0), ("expired", 0)]
    assert app.made == [
        f"{GEMINI}:two cats and one (nsfw)",
        f"{GEMINI}:two cats and one (nsfw)",
        f"{DALLE}:a fox on pro",
    ]
    vevee.close()
