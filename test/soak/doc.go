// Package soak proves Tollgate's money invariants (docs/architecture.md §8) at the
// process level: real `tollgate proxy` and `tollgate billing` processes, built
// once per test run, in front of a throwaway Redis (standalone or a
// three-master Cluster) and an in-process mock provider, under load, faults
// and hostile input.
//
// It holds tests only. The suites are small by default (they run in
// `make test`, with the processes built with -race when the tests are) and
// full size under TOLLGATE_SOAK=full (`make soak`, which runs TestSoak* and
// TestFault*). Every money test ends with a ledger audit of every account it
// touched: Σ ledger amounts = balance = purchased + granted + adjusted − consumed
// (each total the sum of its kinds of entries), Σ usage debits =
// consumed = Σ of the priced usage the clients saw, nothing reserved, no
// balance below zero, and no ledger entry for a call that failed, was
// refused, or that no client made. Every request a test sends carries a tag
// ("call-<n>") that the mock provider records, so that "nothing is forwarded
// without a hold" and "nothing is forwarded twice" are checked call by call.
//
// Suites:
//
//	TestSoakLoad, TestSoakCluster   replicas × accounts × calls, streams and not, 5% upstream 5xx,
//	                                1% stream cuts, 1% client hang-ups; standalone Redis and Cluster
//	TestFaultRedisRestart           redis-server SIGKILLed and restarted under load
//	TestFaultProxySIGKILL/SIGTERM   a replica killed with 200 open streams; a replica drained
//	TestFaultSlowUpstream           hanging and trickling upstreams (raw TCP) against the timeouts
//	TestFaultHoldTTLShorterThanACall a configuration whose holds could expire mid-call is refused
//	TestSoakJournal                 the load suite with the durable books on (PostgreSQL stopped under
//	                                it); tollgate admin reconcile: 0 mismatches
//	TestFaultShipperSIGKILL         tollgate billing (the journal's shipper) SIGKILLed mid-batch, over and over
//	TestFaultRedisFlushRestore      FLUSHALL under load: 503 store_unavailable, tollgate admin restore, keys work;
//	                                no request charged twice, each balance = at the flush − lost unshipped + charged after
//	TestSoakWebhookStorm            signed Stripe events, half duplicates, shuffled, concurrent
//	TestHostile*                    bad requests, duplicate keys, n choices, foreign cost records,
//	                                slow clients, connections per address, JWTs
//
// Environment:
//
//	TOLLGATE_SOAK=full        full size (3 replicas, 2,000 accounts, 50,000 calls; 10,000 webhook events)
//	TOLLGATE_SOAK_SEED=n      replay a run's random workload (each run logs its seed)
//	TOLLGATE_SOAK_BIN=path    test this tollgate binary instead of building one
//	TOLLGATE_SOAK_RACE=0      build the binary without -race even when the tests use it
//	TOLLGATE_SOAK_LOGS=dir    keep every process's log there
//	CI=true                   a missing redis-server or redis-cli fails instead of skipping
//
// It imports product packages (metering) only to set up accounts and read
// the ledger, as an auditor would, and prices usage from the shipped
// configuration file itself, not through the pricing package.
package soak
