// Package books keeps Tollgate's durable books in PostgreSQL, the system of
// record: accounts, their control-plane records (API keys — metadata and the
// hash of the secret, never the secret —, Stripe customer, subscription,
// auto-recharge settings, payments, team members), the audit log of member
// and key changes, and an append-only journal of every
// ledger entry, in integer milli-credits. Redis (package metering) stays the
// hot store; PostgreSQL is never on a call's path.
//
// It imports metering for its value types and declares the small interfaces
// it needs of the Redis store (Ledger, and what restore and reconcile read);
// it never builds a Redis command. It must not import proxy, lease or billing.
//
// # Schema
//
// Versioned migrations (migrations/*.sql) are embedded and applied by goose
// (Migrate: `tollgate migrate`, and the billing process at start with
// database.migrate), under a session advisory lock so that several processes
// may migrate at once. A migration that runs in a transaction changes the
// catalog only; one that fills in data runs without one (goose NO
// TRANSACTION), a slice per short transaction, under the slice's accounts'
// shipping locks (00003). The journal is range-partitioned by month on the
// entry id's time; partitions are created ahead (EnsurePartitions) by migrate
// and the shipper, and a default partition catches older entries.
//
// # Shipping: exactly once
//
// A ledger entry's identity is (account, its id in the account's Redis
// stream). The Shipper copies entries after each account's cursor in one
// transaction per batch of accounts: it takes a transaction-scoped advisory
// lock per account (another shipper skips the account and marks it again),
// reads the cursor, reads the entries after it from Redis, COPYs them into a
// staging table, inserts them ON CONFLICT DO NOTHING, adds the usage of the
// rows really inserted to usage_daily, and moves the cursor — all committed
// together, or not at all (a killed shipper leaves nothing half-done). The
// accounts to ship come from metering's dirty marks (taken before reading, so
// an entry written meanwhile marks the account again) and from a periodic
// full sweep of the ledgers (the backstop for marks lost with a process).
//
// # Reading
//
// With books, Redis keeps only the recent ledger (Shipper.Trim). Store.Ledger
// answers a page from the journal and Redis together (each entry once), so
// that billing's transactions and admin ledger list trimmed entries too;
// Store.UsageCalls and UsageDays feed billing's usage export from the
// journal. billing declares what it reads (billing.Store, billing.UsageExport)
// and Store satisfies it; the tests drive billing's HTTP API over a Store.
//
// # Restore
//
// Restore rebuilds what Redis lost from the books: per lost account, under
// its shipping lock (held from shipping what its surviving ledger holds past
// the cursor until the account is written), the cost records of its recent
// calls first, then the account in one script (all of
// it or nothing: totals, newest entry, history, references, keys with their
// spend and rules), then the global lookups, then the epoch marker; see
// Books.Restore and docs/architecture.md §4a.
//
// # Lifetimes
//
// A *Books (a pgx pool) is safe for concurrent use and lives as long as its
// process. A Shipper's Run returns when its context ends; what it had not
// committed is shipped by the next run (or another process).
package books
