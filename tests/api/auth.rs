//! A1-A3: tokens, roles and tenants.
