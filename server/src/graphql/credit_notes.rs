//! Credit notes (C1-C4): a credit against lines of one invoice, issued and voided; their types,
//! inputs, query and mutations.

use async_graphql::{Context, ID, InputObject, Object, Result};
use serde::Serialize;

use super::preview::{PreviewOut, answer, payload};
use crate::store::preview::Applied;
use super::context::{caller, mutation, state, tenant, today};
use super::pagination::{Page, connection_types, wants_total};
use super::scalars::{Amount, Date};
use super::text::{TEXT_MAX_CHARS, optional_text, required_text};
use crate::auth::Role;
use crate::error::{AppError, AppResult};
use crate::ledger::credit_note::{CreditBy, CreditRequest};
use crate::store::credit_notes::CreditNoteFilter;
use crate::store::rows::key_of;
use super::invoices_and_payments::{CreditNote, CreditNoteStatus};

connection_types!(CreditNote, CreditNoteConnection, CreditNoteEdge);

/// One invoice line to credit: by quantity or by amount (including tax), not both.
#[derive(InputObject, Serialize)]
pub struct CreditNoteLineInput {
    /// Index of the invoice line, from 0.
    pub line_index: i32,
    /// Decimal quantity such as "1".
    pub quantity: Option<String>,
    pub amount: Option<Amount>,
}

#[derive(InputObject, Serialize)]
pub struct CreditNoteInput {
    pub reason: String,
    pub date: Option<Date>,
    pub lines: Vec<CreditNoteLineInput>,
}

/// Which credit notes to list; all conditions must hold.
#[derive(InputObject, Default)]
pub struct CreditNoteFilterInput {
    pub client_id: Option<ID>,
    pub invoice_id: Option<ID>,
    pub status: Option<CreditNoteStatus>,
    /// Credit note date on or after.
    pub from: Option<Date>,
    /// Credit note date on or before.
    pub to: Option<Date>,
}

#[derive(Default)]
pub struct CreditNoteQuery;

#[Object]
impl CreditNoteQuery {
    #[graphql(complexity = "10 + child_complexity")]
    async fn credit_note(&self, ctx: &Context<'_>, id: ID) -> Result<Option<CreditNote>> {
        let request = caller(ctx, Role::Viewer)?;
        Ok(state(ctx).store.credit_note(&request.principal.tenant, &id).await?.map(CreditNote))
    }

    /// Credit notes, newest first, void ones included unless the filter says otherwise.
    #[graphql(complexity = "25 + first.unwrap_or(20).max(0) as usize * child_complexity")]
    async fn credit_notes(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        filter: Option<CreditNoteFilterInput>,
    ) -> Result<CreditNoteConnection> {
        let request = caller(ctx, Role::Viewer)?;
        let page = Page::parse(first, after, "credit_note", state(ctx).limits.page_size_max)?;
        let filter = filter.unwrap_or_default();
        let filter = CreditNoteFilter {
            client: filter.client_id.map(|id| id.0),
            invoice: filter.invoice_id.map(|id| id.0),
            status: filter.status.map(CreditNoteStatus::as_stored),
            from: filter.from.map(|d| d.0),
            to: filter.to.map(|d| d.0),
        };
        let (rows, total) = state(ctx)
            .store
            .credit_notes(&request.principal.tenant, &filter, page.after.clone(), page.fetch_limit(), wants_total(ctx))
            .await?;
        Ok(page.connection(rows.into_iter().map(|row| (key_of(&row.id), CreditNote(row))).collect(), total.unwrap_or(0)))
    }
}

payload!(IssueCreditNotePayload, credit_note: CreditNote, "issueCreditNote");
payload!(VoidCreditNotePayload, credit_note: CreditNote, "voidCreditNote");

async fn credit_note_payload<P: From<(Option<CreditNote>, Option<PreviewOut>)>>(ctx: &Context<'_>, applied: Applied<String>) -> Result<P> {
    Ok(answer(ctx, applied, |key| async move { load_credit_note(ctx, &key).await }).await?.into())
}

#[derive(Default)]
pub struct CreditNoteMutation;

#[Object]
impl CreditNoteMutation {
    /// Issues a credit note for lines of an OPEN invoice (C1, C2).
    async fn issue_credit_note(
        &self,
        ctx: &Context<'_>,
        invoice_id: ID,
        input: CreditNoteInput,
        idempotency_key: String,
        #[graphql(default, desc = "Answer what the request would do, and change nothing (D1).")] dry_run: bool,
    ) -> Result<IssueCreditNotePayload> {
        let m = mutation(ctx, Role::Billing, "issueCreditNote", Some(idempotency_key), &(&invoice_id.0, &input)).await?.dry_run(dry_run);
        let today = today(tenant(ctx).await?);
        let reason = input.reason.trim();
        let reason = if reason.is_empty() { String::new() } else { required_text("reason", reason, TEXT_MAX_CHARS)? };
        let requests = input
            .lines
            .iter()
            .map(|line| {
                let by = match (&line.quantity, line.amount) {
                    (Some(quantity), None) => CreditBy::Quantity(
                        crate::ledger::money::parse_decimal(quantity.trim())
                            .map_err(|_| AppError::invalid(format!("quantity {quantity:?} is not a decimal")))?,
                    ),
                    (None, Some(amount)) => CreditBy::Amount(amount.0),
                    (Some(_), Some(_)) => return Err(AppError::invalid("credit a line by quantity or by amount, not both")),
                    (None, None) => return Err(AppError::invalid("say how much of the line to credit: a quantity or an amount")),
                };
                let line_index = usize::try_from(line.line_index).map_err(|_| AppError::invalid("lineIndex starts at 0"))?;
                Ok(CreditRequest { line: line_index, by })
            })
            .collect::<AppResult<Vec<_>>>()?;
        let applied = state(ctx).commands.issue_credit_note(&m, &invoice_id, reason, requests, input.date.map_or(today, |d| d.0)).await?;
        credit_note_payload(ctx, applied).await
    }

    /// Voids a credit note (C4): the invoice owes its amount again.
    async fn void_credit_note(
        &self,
        ctx: &Context<'_>,
        #[graphql(name = "id")] credit_note_id: ID,
        reason: Option<String>,
        idempotency_key: String,
        #[graphql(default, desc = "Answer what the request would do, and change nothing (D1).")] dry_run: bool,
    ) -> Result<VoidCreditNotePayload> {
        let m = mutation(ctx, Role::Billing, "voidCreditNote", Some(idempotency_key), &(&credit_note_id.0, &reason)).await?.dry_run(dry_run);
        let reason = optional_text("reason", reason.as_deref(), TEXT_MAX_CHARS)?;
        credit_note_payload(ctx, state(ctx).commands.void_credit_note(&m, &credit_note_id, reason).await?).await
    }
}

async fn load_credit_note(ctx: &Context<'_>, key: &str) -> Result<CreditNote> {
    let request = caller(ctx, Role::Viewer)?;
    let row = state(ctx).store.credit_note(&request.principal.tenant, key).await?.ok_or_else(|| AppError::not_found("credit note"))?;
    Ok(CreditNote(row))
}

#[cfg(test)]
mod tests {
    use super::CreditNoteStatus;

    #[test]
    fn credit_note_statuses_round_trip_through_their_stored_text() {
        for status in [CreditNoteStatus::Issued, CreditNoteStatus::Void] {
            assert_eq!(CreditNoteStatus::parse(status.as_stored()), Some(status));
        }
        assert_eq!(CreditNoteStatus::parse("issued"), None, "stored text is matched exactly");
    }
}
