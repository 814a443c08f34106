//! P7, F1, M4, M5, X1, X2 under concurrent requests: many mutations sent at the same moment
//! through the real server, then the ledger read back and checked against its invariants and
//! against what the responses claimed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Instant;

use futures::future::join_all;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rust_decimal::Decimal;
use serde_json::{Value, json};

use crate::helpers::*;

const TRANSACTION_CONFLICT: &str = "TRANSACTION_CONFLICT";

// ---------------------------------------------------------------------------------------------
// P7: one payment spread over ten invoices by fifty requests at once.
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn p7_concurrent_allocations_never_over_allocate() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    let cash = cash_method(&app).await;
    let payment = record_payment(&app, &seed, &cash, "100.00").await;
    let mut invoices = Vec::new();
    for _ in 0..10 {
        invoices.push(app.open_invoice(&seed, "30.00").await["id"].as_str().unwrap().to_owned());
    }

    // 5 requests of 10.00 per invoice, interleaved so that every invoice is contended at once.
    let requests: Vec<(usize, String)> = (0..5).flat_map(|_| (0..10).map(|i| (i, invoices[i].clone()))).collect();
    let started = Instant::now();
    let responses = join_all(requests.iter().map(|(_, invoice)| apply(&app, &payment, invoice, "10.00"))).await;
    let elapsed = started.elapsed();

    let mut tally = Tally::default();
    let mut succeeded: Vec<(usize, Value)> = Vec::new();
    let mut failed: Vec<(usize, String)> = Vec::new();
    for ((index, _), response) in requests.iter().zip(&responses) {
        match outcome(response, "applyPayment") {
            Ok(allocation) => {
                tally.add("applyPayment", "OK");
                succeeded.push((*index, allocation));
            }
            Err(code) => {
                tally.add("applyPayment", &code);
                failed.push((*index, code));
            }
        }
    }
    tally.print("p7", elapsed, retries(&app).await);
    tally.assert_codes(&["AMOUNT_EXCEEDS_UNALLOCATED", "AMOUNT_EXCEEDS_BALANCE", "INVOICE_NOT_OPEN"]);
    let conflicts = tally.count(TRANSACTION_CONFLICT);

    // The payment: allocated == its active allocation records <= amount (P7, M5).
    let p = payment_state(&app, &payment).await;
    let records = p["allocations"].as_array().unwrap();
    assert!(records.iter().all(|a| a["active"] == true), "nothing was removed: {p:#}");
    let record_sum: Decimal = records.iter().map(|a| money(&a["amount"])).sum();
    assert_eq!(money(&p["allocated"]), record_sum, "payment.allocated is the sum of its allocations: {p:#}");
    assert!(money(&p["allocated"]) <= money(&p["amount"]), "P7 broken: {p:#}");
    assert_eq!(money(&p["unallocated"]), money(&p["amount"]) - money(&p["allocated"]), "M5: {p:#}");

    // Every success is one allocation record, and every record was some request's success.
    assert_eq!(succeeded.len(), records.len(), "successes == allocation records");
    let answered: HashSet<&str> = succeeded.iter().map(|(_, a)| a["id"].as_str().unwrap()).collect();
    let stored: HashSet<&str> = records.iter().map(|a| a["id"].as_str().unwrap()).collect();
    assert_eq!(answered, stored, "the allocations the responses named are the ones stored");

    // 100.00 / 10.00: exactly ten fit, and with 30 places on the invoices all ten are taken.
    if conflicts == 0 {
        assert_eq!(succeeded.len(), 10, "exactly 100.00 / 10.00 allocations succeed");
        assert_eq!(money(&p["unallocated"]), Decimal::ZERO);
    } else {
        assert!(succeeded.len() <= 10);
    }

    // Each invoice: amountPaid == its active allocations, balance == total - paid, at most 30.00.
    let mut paid_by_invoice = vec![Decimal::ZERO; invoices.len()];
    for (index, allocation) in &succeeded {
        paid_by_invoice[*index] += money(&allocation["amount"]);
    }
    for (index, id) in invoices.iter().enumerate() {
        let invoice = check_invoice(&app, id).await;
        assert_eq!(money(&invoice["amountPaid"]), paid_by_invoice[index], "the responses add up to amountPaid: {invoice:#}");
        assert!(money(&invoice["amountPaid"]) <= dec("30.00"), "M4: {invoice:#}");
    }

    // Sequential replay in commit order (the allocation numbers PAY-0001-n are taken in the
    // payment's own serial order): each success must have fitted at its turn.
    let mut by_sequence: BTreeMap<u32, (usize, Decimal)> = BTreeMap::new();
    for (index, allocation) in &succeeded {
        let sequence = allocation_sequence(allocation["number"].as_str().unwrap());
        let previous = by_sequence.insert(sequence, (*index, money(&allocation["amount"])));
        assert!(previous.is_none(), "two allocations share number {}", allocation["number"]);
    }
    assert_eq!(by_sequence.keys().copied().collect::<Vec<_>>(), (1..=succeeded.len() as u32).collect::<Vec<_>>(), "numbers 1..n, no gaps");
    let mut unallocated = dec("100.00");
    let mut balances = vec![dec("30.00"); invoices.len()];
    for (sequence, (index, amount)) in &by_sequence {
        assert!(*amount <= unallocated, "replay: allocation {sequence} exceeds the unallocated {unallocated}");
        assert!(*amount <= balances[*index], "replay: allocation {sequence} exceeds invoice {index}'s balance");
        unallocated -= amount;
        balances[*index] -= amount;
    }
    // Money only left the payment and the invoices, so every refusal still holds at the end.
    for (index, code) in &failed {
        match code.as_str() {
            "AMOUNT_EXCEEDS_UNALLOCATED" => assert!(unallocated < dec("10.00"), "refused for unallocated, yet {unallocated} is left"),
            "AMOUNT_EXCEEDS_BALANCE" => assert!(balances[*index] < dec("10.00"), "refused for balance, yet invoice {index} owes {}", balances[*index]),
            "INVOICE_NOT_OPEN" => assert!(balances[*index].is_zero(), "refused as not open, yet invoice {index} owes {}", balances[*index]),
            _ => {}
        }
    }
}

// ---------------------------------------------------------------------------------------------
// F1: fifty refunds of one payment at once.
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn f1_concurrent_refunds_never_over_refund() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    let cash = cash_method(&app).await;
    let payment = record_payment(&app, &seed, &cash, "100.00").await;
    let invoice = app.open_invoice(&seed, "100.00").await["id"].as_str().unwrap().to_owned();
    let first = apply(&app, &payment, &invoice, "40.00").await;
    outcome(&first, "applyPayment").expect("40.00 is allocated");

    let started = Instant::now();
    let responses = join_all((0..50).map(|_| refund(&app, &payment, "5.00"))).await;
    let elapsed = started.elapsed();

    let mut tally = Tally::default();
    let mut refund_ids = HashSet::new();
    for response in &responses {
        match outcome(response, "refundPayment") {
            Ok(refund) => {
                tally.add("refundPayment", "OK");
                assert_eq!(refund["outcome"], "SUCCEEDED");
                assert_eq!(money(&refund["amount"]), dec("5.00"));
                assert!(refund_ids.insert(refund["id"].as_str().unwrap().to_owned()), "one refund per request");
            }
            Err(code) => tally.add("refundPayment", &code),
        }
    }
    tally.print("f1", elapsed, retries(&app).await);
    tally.assert_codes(&["AMOUNT_EXCEEDS_UNALLOCATED"]);
    let conflicts = tally.count(TRANSACTION_CONFLICT);

    let p = payment_state(&app, &payment).await;
    let succeeded: Vec<&Value> = p["refunds"].as_array().unwrap().iter().filter(|r| r["outcome"] == "SUCCEEDED").collect();
    let stored: HashSet<String> = succeeded.iter().map(|r| r["id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(stored, refund_ids, "the refunds the responses named are the ones stored");
    let refunded: Decimal = succeeded.iter().map(|r| money(&r["amount"])).sum();
    assert_eq!(money(&p["refunded"]), refunded, "refunded is the sum of successful refunds: {p:#}");
    assert_eq!(money(&p["allocated"]), dec("40.00"), "refunds never touch allocated money (F1): {p:#}");
    assert!(money(&p["allocated"]) + money(&p["refunded"]) <= money(&p["amount"]), "P7: {p:#}");
    assert_eq!(money(&p["unallocated"]), money(&p["amount"]) - money(&p["allocated"]) - money(&p["refunded"]), "M5: {p:#}");
    if conflicts == 0 {
        assert_eq!(refund_ids.len(), 12, "60.00 / 5.00 refunds succeed");
        assert_eq!(money(&p["refunded"]), dec("60.00"));
        assert_eq!(money(&p["unallocated"]), Decimal::ZERO);
        assert_eq!(tally.count("AMOUNT_EXCEEDS_UNALLOCATED"), 38);
    } else {
        assert!(refund_ids.len() <= 12);
    }
    let i = check_invoice(&app, &invoice).await;
    assert_eq!(money(&i["amountPaid"]), dec("40.00"), "the invoice is untouched: {i:#}");
    // R1: each successful refund counted once in takings.
    check_takings(&app, &[payment]).await;
}

// ---------------------------------------------------------------------------------------------
// M4, M5, P7, V1: every money operation on two payments and three invoices at once.
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Op {
    Apply { payment: usize, invoice: usize, amount: &'static str },
    Refund { payment: usize, amount: &'static str },
    Void { payment: usize },
    Remove { allocation: usize },
}

impl Op {
    fn name(&self) -> &'static str {
        match self {
            Op::Apply { .. } => "applyPayment",
            Op::Refund { .. } => "refundPayment",
            Op::Void { .. } => "voidPayment",
            Op::Remove { .. } => "removeAllocation",
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn m4_concurrent_mixed_operations_keep_balances_consistent() {
    let app = TestApp::spawn().await;
    mixed_operations_keep_balances_consistent(&[&app]).await;
}

/// More than 50 applies, refunds, voids and removals of allocations at once on two payments and
/// three invoices of one practice, sent to each of `apps` in turn (several Settle processes on
/// one database, or one); then P7, M5, M4, V1, X1 and R1 checked against the answers, read
/// through the first.
pub(crate) async fn mixed_operations_keep_balances_consistent(apps: &[&TestApp]) {
    let app = apps[0];
    let seed = app.seed().await;
    let cash = cash_method(&app).await;
    let payments = [record_payment(&app, &seed, &cash, "100.00").await, record_payment(&app, &seed, &cash, "100.00").await];
    let mut invoices = Vec::new();
    for _ in 0..3 {
        invoices.push(app.open_invoice(&seed, "50.00").await["id"].as_str().unwrap().to_owned());
    }
    // Two allocations made beforehand, for the burst to remove (each twice). Both are on the
    // first payment, so the second starts the burst clean and its voids race its applies and
    // refunds (V1); the first can only be voided if both removals come first.
    let mut before = Vec::new();
    for invoice in [0, 1] {
        let response = apply(&app, &payments[0], &invoices[invoice], "20.00").await;
        before.push(outcome(&response, "applyPayment").expect("allocated beforehand")["id"].as_str().unwrap().to_owned());
    }

    let mut ops = Vec::new();
    for amounts in [["5.00", "10.00", "20.00"], ["5.00", "15.00", "25.00"]] {
        for payment in 0..2 {
            for invoice in 0..3 {
                for amount in amounts {
                    ops.push(Op::Apply { payment, invoice, amount });
                }
            }
        }
    }
    for payment in 0..2 {
        for _ in 0..4 {
            ops.push(Op::Refund { payment, amount: "10.00" });
        }
        for _ in 0..2 {
            ops.push(Op::Void { payment });
        }
    }
    for allocation in 0..2 {
        for _ in 0..2 {
            ops.push(Op::Remove { allocation });
        }
    }
    let shuffle_seed: u64 = rand::random();
    ops.shuffle(&mut rand::rngs::StdRng::seed_from_u64(shuffle_seed));
    // Sent among 18 applies and 4 refunds of the same payment, a void almost always loses; on
    // every other seed one void of the clean payment goes first, so that it usually wins and the
    // requests behind it meet a void payment.
    if shuffle_seed % 2 == 0 {
        let at = ops.iter().position(|op| matches!(op, Op::Void { payment: 1 })).unwrap();
        let void = ops.remove(at);
        ops.insert(0, void);
    }
    assert!(ops.len() >= 50);

    let started = Instant::now();
    let responses = join_all(ops.iter().enumerate().map(|(index, op)| {
        let (payments, invoices, before) = (&payments, &invoices, &before);
        let app = apps[index % apps.len()];
        async move {
            match op {
                Op::Apply { payment, invoice, amount } => apply(app, &payments[*payment], &invoices[*invoice], amount).await,
                Op::Refund { payment, amount } => refund(app, &payments[*payment], amount).await,
                Op::Void { payment } => void_payment(app, &payments[*payment]).await,
                Op::Remove { allocation } => remove_allocation(app, &before[*allocation]).await,
            }
        }
    }))
    .await;
    let elapsed = started.elapsed();

    let mut tally = Tally::default();
    let mut applied: Vec<(usize, usize, Value)> = Vec::new();
    let mut refunds: Vec<HashSet<String>> = vec![HashSet::new(), HashSet::new()];
    let mut voided = [0usize; 2];
    let mut removed = [0usize; 2];
    for (op, response) in ops.iter().zip(&responses) {
        let result = outcome(response, op.name());
        tally.add(op.name(), result.as_ref().map_or_else(String::as_str, |_| "OK"));
        let Ok(value) = result else { continue };
        match op {
            Op::Apply { payment, invoice, amount } => {
                assert_eq!(money(&value["amount"]), dec(amount));
                applied.push((*payment, *invoice, value));
            }
            Op::Refund { payment, .. } => {
                assert!(refunds[*payment].insert(value["id"].as_str().unwrap().to_owned()));
            }
            Op::Void { payment } => {
                assert_eq!(value["status"], "VOID");
                voided[*payment] += 1;
            }
            Op::Remove { allocation } => {
                assert_eq!(value["active"], false);
                removed[*allocation] += 1;
            }
        }
    }
    println!("m4 shuffle seed {shuffle_seed}");
    tally.print("m4", elapsed, retries(&app).await);
    tally.assert_codes(&[
        "AMOUNT_EXCEEDS_UNALLOCATED",
        "AMOUNT_EXCEEDS_BALANCE",
        "INVOICE_NOT_OPEN",
        "PAYMENT_VOID",
        "PAYMENT_HAS_ALLOCATIONS",
        "PAYMENT_HAS_REFUNDS",
        "ALLOCATION_REMOVED",
    ]);
    let conflicts = tally.count(TRANSACTION_CONFLICT);
    assert!(removed.iter().all(|&n| n <= 1), "an allocation is removed at most once: {removed:?}");
    if conflicts == 0 {
        assert_eq!(removed, [1, 1], "each allocation made beforehand is removed exactly once");
        assert_eq!(tally.count("ALLOCATION_REMOVED"), 2, "the second removal of each finds it removed");
    }

    // Payments: P7, M5, allocated and refunded agree with the records and with the responses; a
    // void payment holds nothing (V1).
    let mut active_by_invoice: HashMap<String, Decimal> = HashMap::new();
    for (index, id) in payments.iter().enumerate() {
        let p = payment_state(&app, id).await;
        let records = p["allocations"].as_array().unwrap();
        let active: Vec<&Value> = records.iter().filter(|a| a["active"] == true).collect();
        let allocated: Decimal = active.iter().map(|a| money(&a["amount"])).sum();
        let ok_refunds: Vec<&Value> = p["refunds"].as_array().unwrap().iter().filter(|r| r["outcome"] == "SUCCEEDED").collect();
        let refunded: Decimal = ok_refunds.iter().map(|r| money(&r["amount"])).sum();
        assert_eq!(money(&p["allocated"]), allocated, "allocated == active allocation records: {p:#}");
        assert_eq!(money(&p["refunded"]), refunded, "refunded == successful refunds: {p:#}");
        assert!(allocated + refunded <= money(&p["amount"]), "P7 broken: {p:#}");
        assert_eq!(money(&p["unallocated"]), money(&p["amount"]) - allocated - refunded, "M5: {p:#}");
        // Every allocation record is the one made beforehand or a successful apply, and back.
        let mut expected: HashSet<String> = applied.iter().filter(|(pi, _, _)| *pi == index).map(|(_, _, a)| a["id"].as_str().unwrap().to_owned()).collect();
        if index == 0 {
            expected.extend(before.iter().cloned());
            for (allocation, id) in before.iter().enumerate() {
                let record = records.iter().find(|a| a["id"] == id.as_str()).unwrap();
                assert_eq!(record["active"] == false, removed[allocation] == 1, "the removal the responses report is stored: {p:#}");
            }
        }
        let stored: HashSet<String> = records.iter().map(|a| a["id"].as_str().unwrap().to_owned()).collect();
        assert_eq!(stored, expected, "allocation records of payment {index} == the successful applies");
        let stored_refunds: HashSet<String> = ok_refunds.iter().map(|r| r["id"].as_str().unwrap().to_owned()).collect();
        assert_eq!(stored_refunds, refunds[index], "refund records of payment {index} == the successful refunds");
        let numbers: HashSet<u32> = records.iter().map(|a| allocation_sequence(a["number"].as_str().unwrap())).collect();
        assert_eq!(numbers.len(), records.len(), "allocation numbers are unique: {p:#}");
        if p["status"] == "VOID" {
            assert_eq!(voided[index], 1, "a void payment was voided by exactly one request");
            assert!(active.is_empty(), "V1: a void payment has no active allocations: {p:#}");
            assert!(ok_refunds.is_empty(), "V1: a void payment has no refunds: {p:#}");
        } else {
            assert_eq!(voided[index], 0, "a successful void is stored: {p:#}");
        }
        for allocation in active {
            *active_by_invoice.entry(allocation["invoiceId"].as_str().unwrap().to_owned()).or_default() += money(&allocation["amount"]);
        }
    }

    // Invoices: M4 and I3.
    for id in &invoices {
        let invoice = check_invoice(&app, id).await;
        assert_eq!(
            money(&invoice["amountPaid"]),
            active_by_invoice.get(id).copied().unwrap_or_default(),
            "the payments' active allocations add up to the invoice's amountPaid: {invoice:#}"
        );
    }

    // R1: the takings sums, kept as changes are positioned, equal the records: the payments not
    // void and the successful refunds.
    check_takings(&app, &payments).await;
}

/// R1: takings over the days of `payments` and their refunds equal what their records say.
async fn check_takings(app: &TestApp, payments: &[String]) {
    let (mut received, mut paid, mut refunded, mut refund_count) = (Decimal::ZERO, 0, Decimal::ZERO, 0);
    let mut days = Vec::new();
    for id in payments {
        let p = payment_state(app, id).await;
        days.push(p["date"].as_str().unwrap().to_owned());
        if p["status"] != "VOID" {
            received += money(&p["amount"]);
            paid += 1;
        }
        for r in p["refunds"].as_array().unwrap().iter().filter(|r| r["outcome"] == "SUCCEEDED") {
            days.push(r["date"].as_str().unwrap().to_owned());
            refunded += money(&r["amount"]);
            refund_count += 1;
        }
    }
    days.sort();
    let data = app
        .viewer()
        .ok(
            "query($from: Date!, $to: Date!) { takings(from: $from, to: $to) { totals { received { amount } refunded { amount } paymentCount refundCount } } }",
            json!({"from": days[0], "to": days[days.len() - 1]}),
        )
        .await;
    let totals = &data["takings"]["totals"];
    let answered = match totals.as_array().unwrap().as_slice() {
        [] => (Decimal::ZERO, 0, Decimal::ZERO, 0),
        [total] => (money(&total["received"]), total["paymentCount"].as_i64().unwrap(), money(&total["refunded"]), total["refundCount"].as_i64().unwrap()),
        more => panic!("one currency: {more:?}"),
    };
    assert_eq!(answered, (received, paid, refunded, refund_count), "takings == the records: {totals:#}");
}

// ---------------------------------------------------------------------------------------------
// I5, I7: voiding or reverting an invoice while payments are applied to it. These two
// operations do not queue behind the invoice's in-process lock, so here the database's own
// conflict check is what keeps the ledger right.
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn i7_concurrent_void_and_allocations_never_void_an_allocated_invoice() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    let cash = cash_method(&app).await;
    let payment = record_payment(&app, &seed, &cash, "500.00").await;
    let mut invoices = Vec::new();
    for _ in 0..10 {
        invoices.push(app.open_invoice(&seed, "50.00").await["id"].as_str().unwrap().to_owned());
    }

    // Per invoice: four applies of 5.00, one void, one revert to draft; 60 requests in all.
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Kind {
        Apply,
        Void,
        Revert,
    }
    let mut ops: Vec<(usize, Kind)> = Vec::new();
    for invoice in 0..invoices.len() {
        ops.extend([Kind::Apply, Kind::Apply, Kind::Void, Kind::Apply, Kind::Revert, Kind::Apply].map(|kind| (invoice, kind)));
    }
    let shuffle_seed: u64 = rand::random();
    ops.shuffle(&mut rand::rngs::StdRng::seed_from_u64(shuffle_seed));

    let started = Instant::now();
    let responses = join_all(ops.iter().map(|(invoice, kind)| {
        let (app, payment, invoice) = (&app, &payment, &invoices[*invoice]);
        async move {
            match kind {
                Kind::Apply => apply(app, payment, invoice, "5.00").await,
                Kind::Void => {
                    app.billing()
                        .post(
                            "mutation($id: ID!, $key: String!) { voidInvoice(id: $id, reason: \"raised in error\", idempotencyKey: $key) { invoice { id status } } }",
                            json!({"id": invoice, "key": new_key()}),
                        )
                        .await
                }
                Kind::Revert => {
                    app.billing()
                        .post(
                            "mutation($id: ID!, $key: String!) { revertInvoiceToDraft(id: $id, idempotencyKey: $key) { invoice { id status } } }",
                            json!({"id": invoice, "key": new_key()}),
                        )
                        .await
                }
            }
        }
    }))
    .await;
    let elapsed = started.elapsed();

    let mut tally = Tally::default();
    // Per invoice: successful applies, voids, reverts.
    let mut wins = vec![(0usize, 0usize, 0usize); invoices.len()];
    for ((invoice, kind), response) in ops.iter().zip(&responses) {
        let field = match kind {
            Kind::Apply => "applyPayment",
            Kind::Void => "voidInvoice",
            Kind::Revert => "revertInvoiceToDraft",
        };
        let result = outcome(response, field);
        tally.add(field, result.as_ref().map_or_else(String::as_str, |_| "OK"));
        if result.is_ok() {
            match kind {
                Kind::Apply => wins[*invoice].0 += 1,
                Kind::Void => wins[*invoice].1 += 1,
                Kind::Revert => wins[*invoice].2 += 1,
            }
        }
    }
    println!("i7 shuffle seed {shuffle_seed}");
    tally.print("i7", elapsed, retries(&app).await);
    tally.assert_codes(&["INVOICE_NOT_OPEN", "INVOICE_VOID", "INVOICE_HAS_ALLOCATIONS"]);

    let mut paid_total = Decimal::ZERO;
    for (index, id) in invoices.iter().enumerate() {
        let (applied, voided, reverted) = wins[index];
        // Nothing is removed in the burst, so a void or revert that succeeded came before every
        // apply, and after it no apply can succeed: they exclude each other.
        assert!(voided + reverted <= 1, "invoice {index}: at most one of void and revert succeeds: {:?}", wins[index]);
        assert!(applied == 0 || voided + reverted == 0, "invoice {index}: {applied} applies succeeded alongside a void or revert");
        let data = app
            .viewer()
            .ok(
                "query($id: ID!) { invoice(id: $id) { status total { amount } amountPaid { amount } balance { amount } allocations { amount { amount } active } } }",
                json!({"id": id}),
            )
            .await;
        let invoice = &data["invoice"];
        let active: Vec<&Value> = invoice["allocations"].as_array().unwrap().iter().filter(|a| a["active"] == true).collect();
        assert_eq!(active.len(), applied, "invoice {index}: one active allocation per successful apply: {invoice:#}");
        match invoice["status"].as_str().unwrap() {
            "VOID" => {
                assert_eq!(voided, 1, "invoice {index} is void, so a void succeeded");
                assert!(active.is_empty(), "I7 broken: a void invoice holds allocations: {invoice:#}");
            }
            "DRAFT" => {
                assert_eq!(reverted, 1, "invoice {index} is a draft, so a revert succeeded");
                assert!(active.is_empty(), "I5 broken: a draft holds allocations: {invoice:#}");
            }
            _ => {
                assert_eq!(voided + reverted, 0, "invoice {index}: a successful void or revert is stored: {invoice:#}");
                check_invoice(&app, id).await;
            }
        }
        paid_total += money(&invoice["amountPaid"]);
    }
    let p = payment_state(&app, &payment).await;
    let active: Decimal = p["allocations"].as_array().unwrap().iter().filter(|a| a["active"] == true).map(|a| money(&a["amount"])).sum();
    assert_eq!(money(&p["allocated"]), active, "allocated == active allocation records: {p:#}");
    assert_eq!(money(&p["allocated"]), paid_total, "what left the payment arrived on the invoices: {p:#}");
}

// ---------------------------------------------------------------------------------------------
// X2: one idempotency key sent twenty times at once.
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn x2_same_key_twenty_times_at_once_creates_one_payment() {
    let app = TestApp::spawn().await;
    same_key_twenty_times_at_once_creates_one_payment(&[&app]).await;
}

/// recordPayment 20 times at once under one key, sent to each of `apps` in turn (one practice,
/// no payment yet): one payment, PAY-0001, one audit event; the next payment is PAY-0002.
pub(crate) async fn same_key_twenty_times_at_once_creates_one_payment(apps: &[&TestApp]) {
    let app = apps[0];
    let seed = app.seed().await;
    let cash = cash_method(&app).await;
    let key = new_key();
    let input = json!({"clientId": seed.client, "locationId": seed.location, "methodId": cash, "amount": "75.00"});

    let started = Instant::now();
    let variables = json!({"input": input, "key": key});
    let variables = &variables;
    let responses = join_all((0..20).map(|index| async move {
        apps[index % apps.len()]
            .billing()
            .post(
                "mutation($input: RecordPaymentInput!, $key: String!) { recordPayment(input: $input, idempotencyKey: $key) { payment { id number amount { amount } } } }",
                variables.clone(),
            )
            .await
    }))
    .await;
    let elapsed = started.elapsed();

    let mut tally = Tally::default();
    let mut ids = HashSet::new();
    let mut numbers = HashSet::new();
    for response in &responses {
        match outcome(response, "recordPayment") {
            Ok(payment) => {
                tally.add("recordPayment", "OK");
                ids.insert(payment["id"].as_str().unwrap().to_owned());
                numbers.insert(payment["number"].as_str().unwrap().to_owned());
            }
            Err(code) => tally.add("recordPayment", &code),
        }
    }
    tally.print("x2 recordPayment", elapsed, retries(&app).await);
    tally.assert_codes(&[]);
    assert_eq!(ids.len(), 1, "every success names the same payment: {ids:?}");
    assert_eq!(numbers, HashSet::from(["PAY-0001".to_owned()]));
    if tally.count(TRANSACTION_CONFLICT) == 0 {
        assert_eq!(tally.count("OK"), 20);
    }

    let data = app.viewer().ok("{ payments { totalCount } }", json!({})).await;
    assert_eq!(data["payments"]["totalCount"], 1, "one payment for one key");
    let events = audit_actions(&app).await;
    let recorded: Vec<&(String, Option<String>)> = events.iter().filter(|(action, _)| action == "payment.record").collect();
    assert_eq!(recorded.len(), 1, "one payment.record audit event: {events:?}");
    assert_eq!(recorded[0].1.as_deref(), Some(key.as_str()), "the event carries the idempotency key");

    // The replays took no payment number: the next payment is PAY-0002.
    let next = record_payment_full(&app, &seed, &cash, "1.00").await;
    assert_eq!(next["number"], "PAY-0002", "replays must not burn numbers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn x2_same_key_concurrent_pay_invoice_allocates_once() {
    let app = TestApp::spawn().await;
    same_key_concurrent_pay_invoice_allocates_once(&[&app]).await;
}

/// payInvoice 20 times at once under one key, sent to each of `apps` in turn (one practice, no
/// payment yet): one payment, one allocation, one audit event.
pub(crate) async fn same_key_concurrent_pay_invoice_allocates_once(apps: &[&TestApp]) {
    let app = apps[0];
    let seed = app.seed().await;
    let cash = cash_method(&app).await;
    let invoice = app.open_invoice(&seed, "100.00").await["id"].as_str().unwrap().to_owned();
    let key = new_key();

    let started = Instant::now();
    let variables = json!({"invoice": invoice, "input": {"methodId": cash, "amount": "60.00"}, "key": key});
    let variables = &variables;
    let responses = join_all((0..20).map(|index| async move {
        apps[index % apps.len()]
            .billing()
            .post(
                "mutation($invoice: ID!, $input: PayInvoiceInput!, $key: String!) {
                    payInvoice(id: $invoice, input: $input, idempotencyKey: $key) { payment { id number allocated { amount } } }
                }",
                variables.clone(),
            )
            .await
    }))
    .await;
    let elapsed = started.elapsed();

    let mut tally = Tally::default();
    let mut ids = HashSet::new();
    for response in &responses {
        match outcome(response, "payInvoice") {
            Ok(payment) => {
                tally.add("payInvoice", "OK");
                ids.insert(payment["id"].as_str().unwrap().to_owned());
            }
            Err(code) => tally.add("payInvoice", &code),
        }
    }
    tally.print("x2 payInvoice", elapsed, retries(&app).await);
    tally.assert_codes(&[]);
    assert_eq!(ids.len(), 1, "every success names the same payment: {ids:?}");
    if tally.count(TRANSACTION_CONFLICT) == 0 {
        assert_eq!(tally.count("OK"), 20);
    }
    let payment = ids.into_iter().next().unwrap();

    let data = app.viewer().ok("{ payments { totalCount } }", json!({})).await;
    assert_eq!(data["payments"]["totalCount"], 1, "one payment for one key");
    let p = payment_state(&app, &payment).await;
    assert_eq!(p["allocations"].as_array().unwrap().len(), 1, "one allocation: {p:#}");
    assert_eq!(money(&p["allocated"]), dec("60.00"));
    let i = check_invoice(&app, &invoice).await;
    assert_eq!(i["allocations"].as_array().unwrap().len(), 1, "one allocation on the invoice: {i:#}");
    assert_eq!(money(&i["amountPaid"]), money(&p["allocated"]), "the invoice is paid by one payment's allocation: {i:#}");
    assert_eq!(money(&i["balance"]), dec("40.00"));
    let events = audit_actions(&app).await;
    assert_eq!(events.iter().filter(|(action, _)| action == "payment.pay_invoice").count(), 1, "one audit event: {events:?}");
}

// ---------------------------------------------------------------------------------------------
// X1, X2 with payments written together (group commit): a practice's payInvoice requests that
// gather while its last group is written are decided one after the other in one transaction.
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn x1_x2_payments_sent_at_once_are_written_together_and_each_hold_alone() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    let cash = cash_method(&app).await;
    let invoice = app.open_invoice(&seed, "100.00").await["id"].as_str().unwrap().to_owned();
    let groups_before = metric(&app, "settle_mutation_groups_total").await;
    let grouped_before = metric(&app, "settle_grouped_mutations_total").await;

    // 40 payments of 5.00 under keys of their own: the first 20 to be decided pay the invoice,
    // the others find it PAID. 8 of them are sent twice (the same request again, which must name
    // the same payment), and 4 keys also come with 7.00 (another request under a used key).
    let keys: Vec<String> = (0..40).map(|_| new_key()).collect();
    let mut requests: Vec<(String, &str)> = keys.iter().map(|key| (key.clone(), "5.00")).collect();
    requests.extend(keys[..8].iter().map(|key| (key.clone(), "5.00")));
    requests.extend(keys[8..12].iter().map(|key| (key.clone(), "7.00")));
    requests.shuffle(&mut rand::rngs::StdRng::seed_from_u64(7));
    let (app_ref, invoice_ref, cash_ref) = (&app, &invoice, &cash);
    let started = Instant::now();
    let responses = join_all(requests.iter().map(|(key, amount)| async move {
        app_ref
            .billing()
            .post(
                "mutation($invoice: ID!, $input: PayInvoiceInput!, $key: String!) {
                    payInvoice(id: $invoice, input: $input, idempotencyKey: $key) { payment { id number amount { amount } allocated { amount } } }
                }",
                json!({"invoice": invoice_ref, "input": {"methodId": cash_ref, "amount": amount}, "key": key}),
            )
            .await
    }))
    .await;
    let elapsed = started.elapsed();

    let mut tally = Tally::default();
    // key -> (amount, payment id) of each success; (key, amount, code) of each refusal.
    let mut paid: HashMap<String, Vec<(String, String)>> = HashMap::new();
    let mut refused: Vec<(String, String, String)> = Vec::new();
    let mut payments: BTreeMap<String, Value> = BTreeMap::new();
    for ((key, amount), response) in requests.iter().zip(&responses) {
        match outcome(response, "payInvoice") {
            Ok(payment) => {
                tally.add("payInvoice", "OK");
                let id = payment["id"].as_str().unwrap().to_owned();
                paid.entry(key.clone()).or_default().push((amount.to_string(), id.clone()));
                payments.insert(id, payment);
            }
            Err(code) => {
                tally.add("payInvoice", &code);
                refused.push((key.clone(), amount.to_string(), code));
            }
        }
    }
    tally.print("x1/x2 payInvoice together", elapsed, retries(&app).await);
    tally.assert_codes(&["INVOICE_NOT_OPEN", "IDEMPOTENCY_KEY_REUSED"]);

    // X2: one payment per key, named by every request that succeeded under it, and only by
    // requests of the same input; a key's other request is refused as a reuse or finds the
    // invoice paid.
    for (key, successes) in &paid {
        let ids: HashSet<&String> = successes.iter().map(|(_, id)| id).collect();
        let amounts: HashSet<&String> = successes.iter().map(|(amount, _)| amount).collect();
        assert_eq!((ids.len(), amounts.len()), (1, 1), "key {key}: one payment, for one request: {successes:?}");
    }
    for (key, amount, code) in &refused {
        if code == "IDEMPOTENCY_KEY_REUSED" {
            let first = paid.get(key).map(|successes| &successes[0].0);
            assert!(first.is_some_and(|first| first != amount), "key {key} is reused only against a payment of another amount");
        }
    }

    // X1: every payment answered exists once, with its own audit event under its key, and
    // nothing else was written; the payments are numbered without a gap.
    let data = app.viewer().ok("{ payments { totalCount } }", json!({})).await;
    assert_eq!(data["payments"]["totalCount"], payments.len(), "one payment per success and no other");
    let events = audit_actions(&app).await;
    let pay_events: Vec<&Option<String>> = events.iter().filter(|(action, _)| action == "payment.pay_invoice").map(|(_, key)| key).collect();
    assert_eq!(pay_events.len(), payments.len(), "one audit event per payment: {events:?}");
    for key in paid.keys() {
        assert_eq!(pay_events.iter().filter(|event| event.as_deref() == Some(key.as_str())).count(), 1, "key {key}: one audit event");
    }
    let mut numbers: Vec<String> = payments.values().map(|p| p["number"].as_str().unwrap().to_owned()).collect();
    numbers.sort();
    let expected: Vec<String> = (1..=payments.len()).map(|n| format!("PAY-{n:04}")).collect();
    assert_eq!(numbers, expected, "numbered once each, without a gap");

    // The invoice is paid exactly: its allocations are those of the payments answered.
    let allocated: Decimal = payments.values().map(|p| money(&p["allocated"])).sum();
    let i = check_invoice(&app, &invoice).await;
    assert_eq!(i["status"], "PAID", "{i:#}");
    assert_eq!(money(&i["amountPaid"]), dec("100.00"), "{i:#}");
    assert_eq!(allocated, dec("100.00"), "the answers' allocations are the invoice's");
    assert_eq!(i["allocations"].as_array().unwrap().len(), payments.len(), "one allocation per payment answered");
    let paid_total: Decimal = payments.values().map(|p| money(&p["amount"])).sum();
    assert!(paid_total - dec("100.00") < dec("7.00"), "only the payment that finished the invoice holds credit: {paid_total}");

    // The requests were written together: some transaction committed several of them.
    let groups = metric(&app, "settle_mutation_groups_total").await - groups_before;
    let grouped = metric(&app, "settle_grouped_mutations_total").await - grouped_before;
    println!("  {grouped} payments committed in {groups} transactions");
    assert!(grouped > groups, "{grouped} payments in {groups} transactions: none was written together");

    // Payments of ten other invoices at once, three of 10.00 for each invoice of 20.00: each
    // invoice is paid by two of them, and the third finds it paid, whichever group it fell in.
    let mut others = Vec::new();
    for _ in 0..10 {
        others.push(app.open_invoice(&seed, "20.00").await["id"].as_str().unwrap().to_owned());
    }
    let spread: Vec<&String> = others.iter().flat_map(|invoice| [invoice, invoice, invoice]).collect();
    let responses = join_all(spread.iter().map(|invoice| async move {
        app_ref
            .billing()
            .post(
                "mutation($invoice: ID!, $input: PayInvoiceInput!, $key: String!) {
                    payInvoice(id: $invoice, input: $input, idempotencyKey: $key) { payment { id number } }
                }",
                json!({"invoice": invoice, "input": {"methodId": cash_ref, "amount": "10.00"}, "key": new_key()}),
            )
            .await
    }))
    .await;
    let mut paid_per_invoice: HashMap<&String, usize> = HashMap::new();
    for (invoice, response) in spread.iter().zip(&responses) {
        match outcome(response, "payInvoice") {
            Ok(payment) => {
                *paid_per_invoice.entry(invoice).or_default() += 1;
                numbers.push(payment["number"].as_str().unwrap().to_owned());
            }
            Err(code) => assert!(code == "INVOICE_NOT_OPEN" || code == TRANSACTION_CONFLICT, "{invoice}: {code}"),
        }
    }
    for invoice in &others {
        let i = check_invoice(&app, invoice).await;
        assert_eq!((i["status"].as_str(), money(&i["amountPaid"])), (Some("PAID"), dec("20.00")), "{i:#}");
        assert_eq!(paid_per_invoice.get(invoice), Some(&2), "two payments answered for {invoice}");
        assert_eq!(i["allocations"].as_array().unwrap().len(), 2, "{i:#}");
    }
    numbers.sort();
    let expected: Vec<String> = (1..=numbers.len()).map(|n| format!("PAY-{n:04}")).collect();
    assert_eq!(numbers, expected, "numbered once each, without a gap, across both bursts");

    // A refused request claimed no key: the key takes another request.
    let (key, _, _) = refused.iter().find(|(_, _, code)| code == "INVOICE_NOT_OPEN").expect("requests found the invoice paid");
    let recorded = app
        .billing()
        .ok(
            "mutation($input: RecordPaymentInput!, $key: String!) { recordPayment(input: $input, idempotencyKey: $key) { payment { id } } }",
            json!({"input": {"clientId": seed.client, "locationId": seed.location, "methodId": cash, "amount": "1.00"}, "key": key}),
        )
        .await;
    assert!(recorded["recordPayment"]["payment"]["id"].is_string(), "the refused request's key was free: {recorded:#}");
}

/// Payments written together by the practice's writer number themselves and take their places in
/// the ledger's order and the audit chain in their own transaction, while other changes of the
/// practice (standalone payments, voids) are positioned after their commits: at the same moment,
/// both kinds still make one order. Positions run without a gap (E2), payment numbers run without
/// a gap in the order of the payments' positions, the chain holds (H1) with nothing left
/// pending, and takings equal the records (R1).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn e2_h1_payments_written_together_and_other_changes_at_once_keep_one_order() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    let cash = cash_method(&app).await;
    let billing = app.billing();
    let mut invoices = Vec::new();
    for _ in 0..4 {
        invoices.push(app.open_invoice(&seed, "30.00").await["id"].as_str().unwrap().to_owned());
    }
    let mut earlier = Vec::new();
    for _ in 0..4 {
        earlier.push(record_payment(&app, &seed, &cash, "3.00").await);
    }
    let before = crate::events::last_position(&billing).await;
    let grouped_before = metric(&app, "settle_grouped_mutations_total").await;

    // 24 payments of 5.00 paying the four invoices off, 8 standalone payments and 4 voids, at once.
    let (app_ref, seed_ref, cash_ref) = (&app, &seed, &cash);
    let mut requests: Vec<futures::future::BoxFuture<'_, (&str, Gql)>> = Vec::new();
    for n in 0..24 {
        let invoice = invoices[n % 4].clone();
        requests.push(Box::pin(async move {
            let pay = "mutation($invoice: ID!, $input: PayInvoiceInput!, $key: String!) {
                payInvoice(id: $invoice, input: $input, idempotencyKey: $key) { payment { id number } } }";
            let input = json!({"invoice": invoice, "input": {"methodId": cash_ref, "amount": "5.00"}, "key": new_key()});
            ("payInvoice", app_ref.billing().post(pay, input).await)
        }));
    }
    for _ in 0..8 {
        requests.push(Box::pin(async move {
            let record = "mutation($input: RecordPaymentInput!, $key: String!) {
                recordPayment(input: $input, idempotencyKey: $key) { payment { id number } } }";
            let input = json!({"input": {"clientId": seed_ref.client, "locationId": seed_ref.location, "methodId": cash_ref, "amount": "2.00"}, "key": new_key()});
            ("recordPayment", app_ref.billing().post(record, input).await)
        }));
    }
    for payment in &earlier {
        requests.push(Box::pin(async move { ("voidPayment", void_payment(app_ref, payment).await) }));
    }
    requests.shuffle(&mut rand::rngs::StdRng::seed_from_u64(11));
    let responses = join_all(requests).await;

    // Every request succeeded and answered with its payment's number.
    let mut answered_numbers: HashMap<String, String> = HashMap::new();
    for (field, response) in &responses {
        let payment = outcome(response, field).unwrap_or_else(|error| panic!("{field} succeeds: {error}"));
        if *field != "voidPayment" {
            let number = payment["number"].as_str().unwrap_or_else(|| panic!("{field} answers with its number: {payment:#}"));
            answered_numbers.insert(payment["id"].as_str().unwrap().to_owned(), number.to_owned());
        }
    }
    assert_eq!(answered_numbers.len(), 32);
    assert!(metric(&app, "settle_grouped_mutations_total").await >= grouped_before + 24, "the invoice payments went through the writer");

    // E2: one position per change after where the practice stood, no gap.
    let records = crate::events::records_after(&billing, before).await;
    assert_eq!(crate::events::positions(&records), (before + 1..=before + 36).collect::<Vec<_>>());
    assert_eq!(records.iter().filter(|r| crate::events::types(r) == ["PAYMENT_VOIDED"]).count(), 4);
    // Payment numbers follow the positions of the payments' events, without a gap after the four
    // made beforehand, and each is the number its request answered with.
    let recorded: Vec<String> = records
        .iter()
        .filter(|r| crate::events::types(r)[0] == "PAYMENT_RECORDED")
        .map(|r| r["events"][0]["paymentId"].as_str().unwrap().to_owned())
        .collect();
    let numbers: Vec<String> = recorded.iter().map(|id| answered_numbers[id].clone()).collect();
    let expected: Vec<String> = (5..=36).map(|n| format!("PAY-{n:04}")).collect();
    assert_eq!(numbers, expected, "numbers in the order of positions");

    // H1: the chain holds, every event in it.
    let verify = "{ auditVerify { status checked headSequence pending } }";
    let report = app.admin().ok(verify, json!({})).await["auditVerify"].clone();
    assert_eq!(report["pending"], 0, "nothing waits for its place once answered: {report:#}");
    assert_eq!(report["status"], "OK", "{report:#}");
    assert_eq!(report["checked"], report["headSequence"], "{report:#}");

    for invoice in &invoices {
        assert_eq!(check_invoice(&app, invoice).await["status"], "PAID");
    }
    let all: Vec<String> = earlier.iter().cloned().chain(answered_numbers.keys().cloned()).collect();
    check_takings(&app, &all).await;
}

// ---------------------------------------------------------------------------------------------
// Local helpers.
// ---------------------------------------------------------------------------------------------

fn dec(text: &str) -> Decimal {
    text.parse().unwrap_or_else(|e| panic!("{text:?} is not a decimal: {e}"))
}

/// The `amount` of a Money value.
fn money(value: &Value) -> Decimal {
    dec(value["amount"].as_str().unwrap_or_else(|| panic!("not Money: {value}")))
}

/// The place of an allocation on its payment: 3 for PAY-0001-3.
fn allocation_sequence(number: &str) -> u32 {
    number.rsplit('-').next().and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("allocation number {number}"))
}

/// A response's data under `field`, or its error code. A response with neither fails the test.
fn outcome(response: &Gql, field: &str) -> Result<Value, String> {
    assert_eq!(response.status, 200, "HTTP status: {:#}", response.body);
    if response.body.get("errors").is_some_and(|e| !e.is_null()) {
        let code = response.error_code().unwrap_or_else(|| panic!("an error without a code: {:#}", response.body));
        return Err(code.to_owned());
    }
    let value = answered(response.data(), field).clone();
    assert!(value.is_object(), "no {field} in {:#}", response.body);
    Ok(value)
}

/// Outcomes by operation and code, printed so a reader sees what happened.
#[derive(Default)]
struct Tally(BTreeMap<(String, String), usize>);

impl Tally {
    fn add(&mut self, operation: &str, code: &str) {
        *self.0.entry((operation.to_owned(), code.to_owned())).or_default() += 1;
    }

    /// How many outcomes of any operation had `code` ("OK" for successes).
    fn count(&self, code: &str) -> usize {
        self.0.iter().filter(|((_, c), _)| c == code).map(|(_, n)| n).sum()
    }

    fn print(&self, test: &str, elapsed: std::time::Duration, retries: u64) {
        let total: usize = self.0.values().sum();
        println!("{test}: {total} requests in {elapsed:?}; server transaction retries so far: {retries}");
        for ((operation, code), n) in &self.0 {
            println!("  {operation:<20} {code:<27} {n}");
        }
        let conflicts = self.count(TRANSACTION_CONFLICT);
        if conflicts > 0 {
            println!("  NOTE: {conflicts} request(s) ended in TRANSACTION_CONFLICT");
        }
    }

    /// Every error code is one of `allowed` (or TRANSACTION_CONFLICT, which is safe to retry).
    fn assert_codes(&self, allowed: &[&str]) {
        for (operation, code) in self.0.keys() {
            assert!(
                code == "OK" || code == TRANSACTION_CONFLICT || allowed.contains(&code.as_str()),
                "{operation} failed with {code}, which is not one of {allowed:?}"
            );
        }
    }
}

/// The server's `transaction_retries_total`, from /metrics.
async fn retries(app: &TestApp) -> u64 {
    metric(app, "settle_transaction_retries_total").await
}

/// A counter of the server's /metrics (0 before it first counts).
async fn metric(app: &TestApp, name: &str) -> u64 {
    let response = app.http.get(app.url("/metrics")).bearer_auth(app.token(settle::auth::Role::Admin)).send().await.unwrap();
    let text = response.text().await.unwrap();
    text.lines()
        .find(|line| line.split_whitespace().next() == Some(name))
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|n| n.parse::<f64>().ok())
        .map_or(0, |n| n as u64)
}

async fn cash_method(app: &TestApp) -> String {
    let data = app.viewer().ok("{ paymentMethods { id name } }", json!({})).await;
    let cash = data["paymentMethods"].as_array().unwrap().iter().find(|m| m["name"] == "Cash").expect("a Cash method");
    cash["id"].as_str().unwrap().to_owned()
}

async fn record_payment_full(app: &TestApp, seed: &Seed, method: &str, amount: &str) -> Value {
    let data = app
        .billing()
        .ok(
            "mutation($input: RecordPaymentInput!, $key: String!) { recordPayment(input: $input, idempotencyKey: $key) { payment { id number } } }",
            json!({
                "input": {"clientId": seed.client, "locationId": seed.location, "methodId": method, "amount": amount},
                "key": new_key(),
            }),
        )
        .await;
    data["recordPayment"]["payment"].clone()
}

async fn record_payment(app: &TestApp, seed: &Seed, method: &str, amount: &str) -> String {
    record_payment_full(app, seed, method, amount).await["id"].as_str().unwrap().to_owned()
}

async fn apply(app: &TestApp, payment: &str, invoice: &str, amount: &str) -> Gql {
    app.billing()
        .post(
            "mutation($payment: ID!, $invoice: ID!, $amount: Amount!, $key: String!) {
                applyPayment(id: $payment, invoiceId: $invoice, amount: $amount, idempotencyKey: $key) {
                    allocation { id number paymentId invoiceId amount { amount } active }
                }
            }",
            json!({"payment": payment, "invoice": invoice, "amount": amount, "key": new_key()}),
        )
        .await
}

async fn refund(app: &TestApp, payment: &str, amount: &str) -> Gql {
    app.billing()
        .post(
            "mutation($payment: ID!, $input: RefundInput!, $key: String!) {
                refundPayment(id: $payment, input: $input, idempotencyKey: $key) { refund { id amount { amount } outcome } }
            }",
            json!({"payment": payment, "input": {"amount": amount}, "key": new_key()}),
        )
        .await
}

async fn void_payment(app: &TestApp, payment: &str) -> Gql {
    app.billing()
        .post(
            "mutation($payment: ID!, $key: String!) { voidPayment(id: $payment, reason: \"entered twice\", idempotencyKey: $key) { payment { id status } } }",
            json!({"payment": payment, "key": new_key()}),
        )
        .await
}

async fn remove_allocation(app: &TestApp, allocation: &str) -> Gql {
    app.billing()
        .post(
            "mutation($allocation: ID!, $key: String!) { removeAllocation(id: $allocation, idempotencyKey: $key) { allocation { id active } } }",
            json!({"allocation": allocation, "key": new_key()}),
        )
        .await
}

/// A payment with its allocations and refunds.
async fn payment_state(app: &TestApp, id: &str) -> Value {
    let data = app
        .viewer()
        .ok(
            "query($id: ID!) { payment(id: $id) {
                id status date amount { amount } allocated { amount } refunded { amount } unallocated { amount }
                allocations { id number invoiceId amount { amount } active }
                refunds { id date amount { amount } outcome }
            } }",
            json!({"id": id}),
        )
        .await;
    assert!(data["payment"].is_object(), "payment {id} exists");
    data["payment"].clone()
}

/// Reads an invoice and checks M4 and I3 on it: amountPaid == its active allocations, balance ==
/// total - amountPaid - amountCredited and never negative, PAID exactly when the balance is zero.
async fn check_invoice(app: &TestApp, id: &str) -> Value {
    let data = app
        .viewer()
        .ok(
            "query($id: ID!) { invoice(id: $id) {
                id status total { amount } amountPaid { amount } amountCredited { amount } balance { amount }
                allocations { id paymentId amount { amount } active }
            } }",
            json!({"id": id}),
        )
        .await;
    let invoice = data["invoice"].clone();
    let active: Decimal = invoice["allocations"].as_array().unwrap().iter().filter(|a| a["active"] == true).map(|a| money(&a["amount"])).sum();
    assert_eq!(money(&invoice["amountPaid"]), active, "M4: amountPaid == active allocations: {invoice:#}");
    let balance = money(&invoice["balance"]);
    assert_eq!(balance, money(&invoice["total"]) - money(&invoice["amountPaid"]) - money(&invoice["amountCredited"]), "M4: {invoice:#}");
    assert!(balance >= Decimal::ZERO, "M4: a balance is never negative: {invoice:#}");
    let expected = if balance.is_zero() { "PAID" } else { "OPEN" };
    assert_eq!(invoice["status"], expected, "I3: PAID iff the balance is zero: {invoice:#}");
    invoice
}

/// Every audit event of the tenant as (action, idempotency key), following the pages.
async fn audit_actions(app: &TestApp) -> Vec<(String, Option<String>)> {
    let mut events = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let data = app
            .viewer()
            .ok(
                "query($after: String) { auditEvents(first: 100, after: $after) {
                    edges { node { action idempotencyKey } } pageInfo { hasNextPage endCursor }
                } }",
                json!({"after": after}),
            )
            .await;
        let page = &data["auditEvents"];
        for edge in page["edges"].as_array().unwrap() {
            events.push((edge["node"]["action"].as_str().unwrap().to_owned(), edge["node"]["idempotencyKey"].as_str().map(str::to_owned)));
        }
        if page["pageInfo"]["hasNextPage"] != true {
            return events;
        }
        after = page["pageInfo"]["endCursor"].as_str().map(str::to_owned);
    }
}
