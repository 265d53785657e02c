// PixelForge's backend, as the walkthrough writes it (steps 4 to 7; README.md has the same code).
// Only the model provider, the UI and the app's own store are stand-ins, passed in by the tests.

import type { Balance, DenialReason, VeveeClient } from "@vevee/sdk";

export interface ImageProvider {
  generate(model: string, prompt: string): Promise<{ url: string }>;
}

export interface Ui {
  /** The plan is used up and the user never bought credits for this model: sell a bigger plan. */
  offerUpgrade(userId: string, reasons: DenialReason[]): void;
  /** Otherwise: sell a credit pack. */
  offerCredits(userId: string, reasons: DenialReason[]): void;
  renderQuota(userId: string, quota: { planLeft: number; creditsLeft: number; total: number }): void;
}

export interface Purchases {
  /** Balances granted by a checkout, by its payment intent, so that a refund can take them back. */
  set(paymentIntent: string, balanceIds: string[]): void;
  get(paymentIntent: string): string[] | undefined;
}

export function pixelForge(vevee: VeveeClient, provider: ImageProvider, ui: Ui, purchases: Purchases) {
  // Step 4: hold before calling the provider; commit what it delivered, release if it failed.
  async function generateImage(userId: string, model: string, prompt: string) {
    const hold = await vevee.reserve(userId, model, 1);
    if (!hold.allowed) {
      if (hold.reasons.includes("plan_exhausted")) ui.offerUpgrade(userId, hold.reasons);
      else ui.offerCredits(userId, hold.reasons);
      return null;
    }
    try {
      const image = await provider.generate(model, prompt);
      await vevee.commit(hold.reservationId, { response: { url: image.url } });
      return image;
    } catch (error) {
      const errorCode = (error as { code?: string }).code ?? "provider_error";
      await vevee.release(hold.reservationId, { errorCode });
      throw error;
    }
  }

  // Step 5: what the header's quota widget shows: plan images left plus credits left.
  async function refreshQuota(userId: string) {
    const usage = await vevee.usage(userId, "image.*");
    const planLeft = usage.counters.reduce((sum, c) => sum + c.remaining, 0);
    const creditsLeft = usage.credits.reduce((sum, b) => sum + b.remaining, 0);
    ui.renderQuota(userId, { planLeft, creditsLeft, total: planLeft + creditsLeft });
  }

  // Step 6: Stripe subscription events. A canceled Pro subscription puts the user back on Free.
  async function onSubscriptionUpdated(userId: string, planId: string) {
    await vevee.upsertSubscription({ userId, planId });
  }
  async function onSubscriptionDeleted(userId: string) {
    await vevee.upsertSubscription({ userId, planId: "free" });
  }

  // Step 7: a paid checkout grants its pack; a refund revokes what it granted.
  async function onCheckoutCompleted(session: {
    id: string;
    payment_intent: string;
    metadata: { userId: string; packId: string };
  }) {
    const { balances } = await vevee.credits.grant({
      userId: session.metadata.userId,
      packId: session.metadata.packId,
      externalRef: session.id,
      source: "purchase",
      notes: `Stripe checkout ${session.id}`,
    });
    purchases.set(session.payment_intent, balances.map((b: Balance) => b.id));
    return balances;
  }
  async function onChargeRefunded(charge: { payment_intent: string }) {
    const revoked: Balance[] = [];
    for (const balanceId of purchases.get(charge.payment_intent) ?? []) {
      revoked.push(await vevee.credits.revoke({ balanceId, reason: "refund" }));
    }
    return revoked;
  }

  return {
    generateImage,
    refreshQuota,
    onSubscriptionUpdated,
    onSubscriptionDeleted,
    onCheckoutCompleted,
    onChargeRefunded,
  };
}
