//! I1-I8, M1-M4, X2, X3 through the invoice API.

use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn i1_new_invoice_is_draft_and_m3_totals() {
    let app = TestApp::spawn().await;
    let seed = app.seed().await;
    let invoice = app
        .draft_invoice(&seed, json!([
            {"description": "Consult", "unitPrice": "100.00", "taxRateId": seed.gst},
            {"description": "Dressing", "quantity": "3", "unitPrice": "33.33", "discount": {"type": "PERCENT", "value": "10"}}
        ]))
        .await;
    assert_eq!(invoice["status"], "DRAFT");
    assert_eq!(invoice["number"], serde_json::Value::Null);
    assert_eq!(invoice["total"]["amount"], "199.99");
    assert_eq!(invoice["taxTotal"]["amount"], "10.00");
    assert_eq!(invoice["balance"]["amount"], "199.99");
}
