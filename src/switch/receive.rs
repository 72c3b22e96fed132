//! Receive: the saga that moves money from a freeze to a recipient.
//!
//! ```text
//! reserve+Debiting ──00──▶ (credit) ──00──▶ Approved (answer 00)
//!    │            │                 │
//!    │            ├─decline─▶ Failed (reservation released, bank's code)
//!    │            └─no answer─▶ InDoubt (91, reservation kept)
//!    │                              ├─decline─▶ ReversingDebit ──00──▶ Failed (credit's code)
//!    │                              │                 └─no answer─▶ InDoubt
//!    │                              └─no answer─▶ InDoubt (91)
//!    └─ 25 not found · 12 not open · 61 over the frozen amount · 94 same key other content
//! ```
//!
//! The debit's and the credit's identities (F7, STAN) are allocated before the
//! reservation and committed with it, so one commit before the debit covers
//! both sends: whatever a crash interrupts, recovery can name (and reverse)
//! either message. A reversal is recorded (`ReversingDebit`) before it is sent.
//! The answer to the wallet is given only after the saga's end is committed:
//! two commits per receive on the happy path.

use tracing::warn;

use super::{messages, Outcome, Switch};
use crate::codec::Message;
use crate::fields::{amount_minor, currency, num, OriginalData};
use crate::store::{
    FreezeRecord, NewReceive, ReceiveOutcome, RequestKey, Reserve, SagaState, SentMessage,
    StoredAnswer,
};

pub(super) async fn run(
    switch: &Switch,
    request: &Message,
    key: RequestKey,
    digest: [u8; 32],
) -> Outcome {
    let (Ok(original), Ok(amount), Ok(currency)) = (
        OriginalData::of(request),
        amount_minor(request),
        currency(request),
    ) else {
        return Outcome::reject(switch, key, digest, request, "30").await;
    };
    if &original.mti != b"0100" {
        return Outcome::reject(switch, key, digest, request, "25").await;
    }
    if amount == 0 {
        return Outcome::reject(switch, key, digest, request, "13").await;
    }
    let receiver_pan = request.get_str(num::PAN).unwrap_or_default().to_string();
    let Some(receiver_bank) = switch.route(receiver_pan.as_bytes()).cloned() else {
        return Outcome::reject(switch, key, digest, request, "14").await;
    };
    let identities = async {
        let now = switch.clock.now();
        let debit = messages::sent_message(now, switch.stans.next().await?);
        let credit = messages::sent_message(now, switch.stans.next().await?);
        Ok::<_, crate::store::StoreError>((debit, credit))
    };
    let (debit, credit) = match identities.await {
        Ok(ids) => ids,
        Err(e) => {
            warn!(error = %e, "no STAN");
            return Outcome {
                response: switch.reply(request, "96"),
                note: Some(e.to_string()),
            };
        }
    };
    let reserved = switch
        .store
        .reserve(NewReceive {
            debit: Some(debit),
            credit: Some(credit),
            request: key,
            request_digest: digest,
            freeze: original.freeze_key(),
            amount_minor: amount,
            receiver_pan: receiver_pan.clone(),
            receiver_bank: receiver_bank.institution_id().to_string(),
            created_at_ms: switch.clock.now_ms(),
        })
        .await;
    let freeze = match reserved {
        Ok(Reserve::Reserved(freeze)) => freeze,
        Ok(Reserve::NotFound) => return Outcome::reject(switch, key, digest, request, "25").await,
        Ok(Reserve::NotOpen(_)) => {
            return Outcome::reject(switch, key, digest, request, "12").await
        }
        Ok(Reserve::Exceeds { .. }) => {
            return Outcome::reject(switch, key, digest, request, "61").await
        }
        Ok(Reserve::Duplicate {
            request_digest,
            answer,
        }) => {
            let (code, note) = match answer {
                Some(a) if request_digest == digest => {
                    return Outcome {
                        response: a.response,
                        note: Some("resend".into()),
                    }
                }
                _ if request_digest == digest => ("91", "resend of a receive still in progress"),
                _ => ("94", "receive key exists with other content"),
            };
            return Outcome {
                response: switch.reply(request, code),
                note: Some(note.into()),
            };
        }
        Err(e) => {
            warn!(error = %e, "store unavailable");
            return Outcome {
                response: switch.reply(request, "96"),
                note: Some(e.to_string()),
            };
        }
    };
    let saga = Saga {
        switch,
        request,
        key,
        digest,
        freeze,
        amount,
        receiver_pan,
        debit,
        credit,
    };
    if freeze_currency_differs(&saga.freeze, currency) {
        return saga.finish(ReceiveOutcome::Failed, "13", None).await;
    }
    saga.run(receiver_bank).await
}

fn freeze_currency_differs(freeze: &FreezeRecord, currency: u16) -> bool {
    freeze.currency != currency
}

struct Saga<'a> {
    switch: &'a Switch,
    request: &'a Message,
    key: RequestKey,
    digest: [u8; 32],
    freeze: FreezeRecord,
    amount: u64,
    receiver_pan: String,
    debit: SentMessage,
    credit: SentMessage,
}

impl Saga<'_> {
    /// Records a step and returns the identity of the message it announces.
    async fn step(&self, state: SagaState) -> Result<SentMessage, String> {
        let stan = self.switch.stans.next().await.map_err(|e| e.to_string())?;
        let sent = messages::sent_message(self.switch.clock.now(), stan);
        self.switch
            .store
            .saga_step(&self.key, state, Some(sent))
            .await
            .map_err(|e| e.to_string())?;
        Ok(sent)
    }

    async fn run(self, receiver_bank: std::sync::Arc<crate::link::BankLink>) -> Outcome {
        let switch = self.switch;
        let Some(payer_bank) = switch.bank(&self.freeze.payer_bank).cloned() else {
            // A freeze recorded for a bank no longer configured.
            return self.finish(ReceiveOutcome::Failed, "91", None).await;
        };

        // Debit the payer bank (state Debiting was recorded with the reservation).
        let debit = self.debit;
        let now = switch.clock.now();
        let msg = messages::debit(
            &self.freeze,
            self.amount,
            &self.receiver_pan,
            &debit,
            now,
            &switch.id,
        );
        match payer_bank.request(&msg).await {
            Ok((answer, _)) => {
                let code = answer
                    .get_str(num::RESPONSE_CODE)
                    .unwrap_or("96")
                    .to_string();
                if code != "00" {
                    return self.finish(ReceiveOutcome::Failed, &code, None).await;
                }
            }
            Err(e) if e.maybe_delivered() => {
                warn!(bank = payer_bank.institution_id(), error = %e, "debit outcome unknown");
                return self.finish(ReceiveOutcome::InDoubt, "91", None).await;
            }
            Err(e) => {
                warn!(bank = payer_bank.institution_id(), error = %e, "debit not sent");
                return self.finish(ReceiveOutcome::Failed, "91", None).await;
            }
        }

        // Credit the receiver bank, under the identity recorded with the reservation.
        let credit = self.credit;
        let now = switch.clock.now();
        let msg = messages::credit(
            &self.freeze,
            self.amount,
            &self.receiver_pan,
            receiver_bank.institution_id(),
            &credit,
            now,
            &switch.id,
        );
        let declined_code = match receiver_bank.request(&msg).await {
            Ok((answer, _)) => {
                let code = answer
                    .get_str(num::RESPONSE_CODE)
                    .unwrap_or("96")
                    .to_string();
                if code == "00" {
                    let auth = answer.get(num::AUTH_CODE).cloned();
                    return self.finish(ReceiveOutcome::Approved, "00", auth).await;
                }
                code
            }
            Err(e) if e.maybe_delivered() => {
                warn!(bank = receiver_bank.institution_id(), error = %e, "credit outcome unknown");
                return self.finish(ReceiveOutcome::InDoubt, "91", None).await;
            }
            Err(e) => {
                warn!(bank = receiver_bank.institution_id(), error = %e, "credit not sent");
                "91".to_string()
            }
        };

        // The credit was declined (or never sent): undo the debit.
        let reversal = match self.step(SagaState::ReversingDebit).await {
            Ok(sent) => sent,
            Err(e) => {
                warn!(error = %e, "saga step not recorded; debit left for recovery");
                return self
                    .finish(ReceiveOutcome::InDoubt, &declined_code, None)
                    .await;
            }
        };
        let now = switch.clock.now();
        let msg = messages::debit_reversal(
            &self.freeze,
            self.amount,
            &self.receiver_pan,
            &debit,
            &reversal,
            now,
            &switch.id,
        );
        match payer_bank.request(&msg).await {
            Ok((answer, _)) if answer.get_str(num::RESPONSE_CODE) == Some("00") => {
                self.finish(ReceiveOutcome::Failed, &declined_code, None)
                    .await
            }
            Ok((answer, _)) => {
                warn!(
                    bank = payer_bank.institution_id(),
                    code = answer.get_str(num::RESPONSE_CODE).unwrap_or("-"),
                    "debit reversal declined"
                );
                self.finish(ReceiveOutcome::InDoubt, &declined_code, None)
                    .await
            }
            Err(e) => {
                warn!(bank = payer_bank.institution_id(), error = %e, "debit reversal not answered");
                self.finish(ReceiveOutcome::InDoubt, &declined_code, None)
                    .await
            }
        }
    }

    /// Ends the saga in the store, then answers the wallet.
    async fn finish(
        self,
        outcome: ReceiveOutcome,
        code: &str,
        auth: Option<bytes::Bytes>,
    ) -> Outcome {
        let switch = self.switch;
        let mut response = switch.respond(self.request, code);
        if code == "00" {
            response.set(
                num::AUTH_CODE,
                auth.unwrap_or_else(|| bytes::Bytes::from_static(b"000000")),
            );
        }
        let bytes = switch.encode(&mut response);
        let answer = StoredAnswer {
            request_digest: self.digest,
            response: bytes.clone(),
        };
        match switch
            .store
            .finish_receive(&self.key, outcome, answer)
            .await
        {
            Ok(()) => Outcome {
                response: bytes,
                note: None,
            },
            Err(e) => {
                warn!(error = %e, "saga end not recorded");
                Outcome {
                    response: switch.reply(self.request, "96"),
                    note: Some(e.to_string()),
                }
            }
        }
    }
}
