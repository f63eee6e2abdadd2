package books

import (
	"context"
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/tollgate/tollgate/metering"
)

// TestTeamsInBooks: member changes and audit entries reach PostgreSQL before
// they are acknowledged (and fail when it is down), keys keep their creator,
// and a restore after Redis lost everything brings the members back.
func TestTeamsInBooks(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.account(t, "acme", 1_000_000)
	bs := e.b.NewStore(e.St)
	change := func(st interface {
		ChangeMember(context.Context, metering.MemberChange) (string, error)
	}, user, role string) error {
		_, err := st.ChangeMember(ctx, metering.MemberChange{Account: "acme", User: user, Role: role, ByOwner: true})
		return err
	}
	for _, m := range [][2]string{{"ann", "admin"}, {"max", "member"}, {"bob", "billing"}} {
		if err := change(bs, m[0], m[1]); err != nil {
			t.Fatal(err)
		}
	}
	if err := change(bs, "bob", ""); err != nil {
		t.Fatal(err)
	}
	// A removal retried after the books failed still heals them.
	if err := change(bs, "bob", ""); !errors.Is(err, metering.ErrNoMember) {
		t.Fatalf("removing a non-member: %v", err)
	}
	members := func() string {
		t.Helper()
		rows, err := e.b.pool.Query(ctx, `SELECT "user", role FROM members WHERE account = 'acme' ORDER BY "user"`)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		out := ""
		for rows.Next() {
			var u, r string
			if err := rows.Scan(&u, &r); err != nil {
				t.Fatal(err)
			}
			out += u + "=" + r + " "
		}
		return out
	}
	if got := members(); got != "acme=owner ann=admin max=member " {
		t.Fatalf("members in the books: %q", got)
	}
	var ids []string
	for i := range 3 {
		a, err := bs.AppendAudit(ctx, metering.AuditEntry{Account: "acme", Actor: "ann", Action: "key.created", Target: fmt.Sprint("key_", i)})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, a.ID)
	}
	var n int
	if err := e.b.pool.QueryRow(ctx, `SELECT count(*) FROM audit_log WHERE account = 'acme' AND id = ANY($1) AND actor = 'ann'`, ids).Scan(&n); err != nil || n != 3 {
		t.Fatalf("audit entries in the books: %d, %v", n, err)
	}
	k, secret, err := bs.IssueKey(ctx, metering.NewKey{Account: "acme", Name: "dev", CreatedBy: "max"})
	if err != nil {
		t.Fatal(err)
	}
	var by string
	if err := e.b.pool.QueryRow(ctx, `SELECT created_by FROM api_keys WHERE account = 'acme' AND id = $1`, k.ID).Scan(&by); err != nil || by != "max" {
		t.Fatalf("key creator in the books: %q, %v", by, err)
	}

	if err := bs.SetMemberBudget(ctx, "acme", "max", 5000, metering.PeriodWeek); err != nil {
		t.Fatal(err)
	}
	keyCall(t, e.St, "acme", k.ID, "mb-1", 1200)
	keyCall(t, e.St, "acme", k.ID, "mb-2", 800)

	// The books down: a member change is not acknowledged.
	down, err := Open(ctx, e.pg.URL(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	down.Close()
	if err := change(down.NewStore(e.St), "zed", "member"); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("a member change with the books down: %v, want ErrUnavailable", err)
	}
	if _, err := down.NewStore(e.St).AppendAudit(ctx, metering.AuditEntry{Account: "acme", Actor: "a", Action: "x", Target: "y"}); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("an audit entry with the books down: %v, want ErrUnavailable", err)
	}
	if err := down.NewStore(e.St).SetMemberBudget(ctx, "acme", "ann", 1, metering.PeriodDay); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("a member budget with the books down: %v, want ErrUnavailable", err)
	}
	if err := bs.SetMemberBudget(ctx, "acme", "ann", 0, ""); err != nil { // the retry: heals the books
		t.Fatal(err)
	}
	if err := change(bs, "zed", ""); err != nil { // the retry of a removal: heals the books
		t.Fatal(err)
	}
	// Member changes are audited with the change (in Redis, by its script)
	// and reach audit_log before the answer; the entry of the attempt made
	// while the books were down is copied by the next change.
	var log []string
	lrows, err := e.b.pool.Query(ctx, `SELECT action || ':' || target FROM audit_log WHERE account = 'acme' AND action LIKE 'member.%' ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	for lrows.Next() {
		var a string
		if err := lrows.Scan(&a); err != nil {
			t.Fatal(err)
		}
		log = append(log, a)
	}
	lrows.Close()
	if got := fmt.Sprint(log); got != "[member.added:ann member.added:max member.added:bob member.removed:bob member.added:zed member.removed:zed]" {
		t.Fatalf("member changes in audit_log: %s", got)
	}

	// Redis loses everything; restore brings members and key creators back.
	if _, _, err := e.St.EnsureEpoch(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := e.b.NewShipper(e.St, ShipperOptions{}).Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	e.Srv.Flush(t)
	if res, err := e.b.Restore(ctx, e.St, io.Discard); err != nil || res.Restored != 1 {
		t.Fatalf("Restore = %+v, %v", res, err)
	}
	// The audit log outlives Redis: read from audit_log (with what Redis
	// holds), newest first.
	if n, _ := e.St.Audit(ctx, "acme", 100); len(n) != 0 {
		t.Fatalf("Redis's audit log after the flush: %d entries", len(n))
	}
	al, err := bs.Audit(ctx, "acme", 100)
	if err != nil || len(al) != 10 || al[0].Action != metering.AuditMemberRemoved || al[0].Target != "zed" ||
		al[9].Action != metering.AuditMemberAdded || al[9].Target != "ann" {
		t.Fatalf("the audit log after Redis lost it: %+v, %v", al, err)
	}
	if _, err := bs.AppendAudit(ctx, metering.AuditEntry{Account: "acme", Actor: "ann", Action: "key.revoked", Target: "key_x"}); err != nil {
		t.Fatal(err)
	}
	if al, err := bs.Audit(ctx, "acme", 2); err != nil || len(al) != 2 || al[0].Action != "key.revoked" || al[1].Target != "zed" {
		t.Fatalf("the audit log, Redis's and the books' entries merged: %+v, %v", al, err)
	}
	ms, err := e.St.Members(ctx, "acme")
	if err != nil || fmt.Sprint(ms) != "[{acme owner} {ann admin} {max member}]" {
		t.Fatalf("members after restore: %v, %v", ms, err)
	}
	if r, err := e.St.MemberRole(ctx, "acme", "bob"); err != nil || r != "" {
		t.Fatalf("a removed member after restore: %q, %v", r, err)
	}
	keys, err := e.St.Keys(ctx, "acme")
	if err != nil || len(keys) != 1 || keys[0].CreatedBy != "max" {
		t.Fatalf("keys after restore: %+v, %v", keys, err)
	}
	// The member's budget comes back, and its key is held call by call again.
	if b, err := e.St.MemberBudgets(ctx, "acme"); err != nil || len(b) != 1 || b["max"].Budget != 5000 || b["max"].Period != metering.PeriodWeek {
		t.Fatalf("member budgets after restore: %+v, %v", b, err)
	} else if b["max"].PeriodUsed != 2000 {
		t.Fatalf("the member's spend this week after restore: %d, want 2000 (what its key spent)", b["max"].PeriodUsed)
	}
	if id, err := e.St.Authenticate(ctx, []byte(secret)); err != nil || !id.Limited {
		t.Fatalf("a key under a member budget after restore: %+v, %v", id, err)
	}
	// Removing the last budget removes it from the books too.
	if err := bs.SetMemberBudget(ctx, "acme", "max", 0, ""); err != nil {
		t.Fatal(err)
	}
	var rows int
	if err := e.b.pool.QueryRow(ctx, `SELECT count(*) FROM account_records WHERE account = 'acme' AND name = 'mbudget'`).Scan(&rows); err != nil || rows != 0 {
		t.Fatalf("budget records left in the books: %d, %v", rows, err)
	}
	// The last-owner rule holds on the restored team.
	if err := change(bs, "acme", ""); !errors.Is(err, metering.ErrLastOwner) {
		t.Fatalf("removing the last owner after restore: %v", err)
	}
}
