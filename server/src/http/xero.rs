//! Journal entries written in Xero's manual journal import layout (docs/rules.md, "Journal").
//!
//! Xero's help, "Enter multiple manual journals using an import template"
//! (https://help.xero.com/nz/ManualJournalsImport), gives the columns of its template:
//! Narration, Date, Description, AccountCode, TaxRate, Amount, then TrackingName1,
//! TrackingOption1, TrackingName2 and TrackingOption2; the template marks the mandatory ones with
//! `*`. Rows with the same narration and date are the lines of one journal; a date is
//! `dd/mm/yyyy` or `dd mmm yyyy`; an amount is a debit when positive and a credit when negative;
//! the tax rate is a rate's full name as the organisation's tax settings have it; one file holds at
//! most 300 lines. This module knows that layout and nothing of HTTP or the store.

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;

use crate::ledger::journal::{Chart, Entry};
use crate::ledger::money::display_amount;

/// The template's header row, exactly.
pub const HEADER: &str = "*Narration,*Date,Description,*AccountCode,*TaxRate,*Amount,TrackingName1,TrackingOption1,TrackingName2,TrackingOption2";

/// Lines Xero takes in one import file.
pub const LINES_PER_FILE_MAX: usize = 300;

/// The tax rate given to every line unless asked otherwise: Australia's rate for amounts outside
/// the BAS. Settle posts tax to its own account, so no line may have Xero add tax again.
pub const TAX_RATE_DEFAULT: &str = "BAS Excluded";

/// `dd mmm yyyy` ("05 Nov 2026"): one of the two forms Xero reads, and the one no regional
/// setting can take for another day.
pub fn format_date(date: NaiveDate) -> String {
    date.format("%d %b %Y").to_string()
}

/// A field as RFC 4180 writes it: quoted when it holds a comma, a quote or a line break.
fn field(text: &str) -> String {
    if text.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

/// The day an entry took effect in the practice's timezone: its journal's date.
pub fn day_of(at: DateTime<Utc>, timezone: Tz) -> NaiveDate {
    at.with_timezone(&timezone).date_naive()
}

/// The rows of one entry: one per line, all with the entry's narration and date, so Xero makes
/// them one journal. The narration names the entry's id, so two entries of one day never merge.
pub fn entry_rows(entry: &Entry, chart: &Chart, tax_rate: &str, timezone: Tz) -> Vec<String> {
    let narration = field(&format!("{} [Settle {}]", entry.description, entry.id));
    let date = format_date(day_of(entry.at, timezone));
    entry
        .lines
        .iter()
        .map(|line| {
            let amount = display_amount(line.debit - line.credit, &entry.currency);
            let account = field(&chart.name(&line.account));
            format!("{narration},{date},{account},{},{},{amount},,,,", field(&chart.code(&line.account)), field(tax_rate))
        })
        .collect()
}

/// A whole file: the header, then each entry's rows, lines ending CRLF.
pub fn file<'a>(entries: impl IntoIterator<Item = &'a Entry>, chart: &Chart, tax_rate: &str, timezone: Tz) -> String {
    let mut text = String::from(HEADER);
    text.push_str("\r\n");
    for row in entries.into_iter().flat_map(|entry| entry_rows(entry, chart, tax_rate, timezone)) {
        text.push_str(&row);
        text.push_str("\r\n");
    }
    text
}

/// How many of `entries` (from the first) fit in one file: whole entries only, at most
/// [`LINES_PER_FILE_MAX`] lines, and always at least one entry.
pub fn entries_per_file(entries: &[&Entry]) -> usize {
    let mut lines = 0;
    let mut count = 0;
    for entry in entries {
        lines += entry.lines.len();
        if lines > LINES_PER_FILE_MAX && count > 0 {
            break;
        }
        count += 1;
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::journal::{Change, Movement, Named, derive};

    #[test]
    fn an_entry_is_one_journal_of_signed_amounts_with_quoted_text() {
        let chart = Chart::new(vec![("m".into(), "Cash, front desk".into())]);
        let payment = Named { record: "payment:p".into(), reference: "PAY-0001".into() };
        let change = Change {
            audit_event: "a1".into(),
            // 23:30 UTC is the next morning in Sydney.
            at: "2026-11-04T23:30:00Z".parse().unwrap(),
            currency: "AUD".into(),
            movements: vec![Movement::PaymentReceived { payment, method: "m".into(), method_name: "Cash, \"front\"".into(), amount: "120.5".parse().unwrap(), client: "c".into(), date: chrono::NaiveDate::from_ymd_opt(2026, 11, 26).unwrap(), location: "l".into() }],
        };
        let entries = derive(&[change]);
        let text = file(&entries, &chart, TAX_RATE_DEFAULT, chrono_tz::Australia::Sydney);
        let rows: Vec<&str> = text.split("\r\n").collect();
        assert_eq!(rows[0], HEADER);
        assert_eq!(rows[1], "\"Payment PAY-0001 received by Cash, \"\"front\"\" [Settle a1/1]\",05 Nov 2026,\"Money received: Cash, front desk\",1101,BAS Excluded,120.50,,,,");
        assert_eq!(rows[2], "\"Payment PAY-0001 received by Cash, \"\"front\"\" [Settle a1/1]\",05 Nov 2026,Client credit held,2100,BAS Excluded,-120.50,,,,");
        assert_eq!(rows[3], "", "the file ends with a line break");
    }

    #[test]
    fn a_file_holds_whole_entries_up_to_xeros_line_limit() {
        let entry = |lines: usize| Entry {
            id: "a/1".into(),
            kind: crate::ledger::journal::EntryKind::PaymentReceived,
            at: Utc::now(),
            audit_event: "a".into(),
            records: Vec::new(),
            description: String::new(),
            currency: "AUD".into(),
            lines: vec![
                crate::ledger::journal::Line {
                    account: crate::ledger::journal::Account::Sales,
                    debit: rust_decimal::Decimal::ONE,
                    credit: rust_decimal::Decimal::ZERO
                };
                lines
            ],
        };
        let (two, three) = (entry(2), entry(3));
        let many: Vec<&Entry> = std::iter::repeat_n(&three, 100).chain(std::iter::repeat_n(&two, 5)).collect();
        assert_eq!(entries_per_file(&many), 100, "100 entries of 3 lines are 300 lines");
        assert_eq!(entries_per_file(&many[1..]), 100, "99 x 3 + 2 = 299 lines; one more would pass 300");
        assert_eq!(entries_per_file(&many[100..]), 5);
        assert_eq!(entries_per_file(&[]), 0);
    }
}
