package books

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"
)

//go:embed migrations/*.sql
var migrations embed.FS

// ErrUnavailable wraps every failure to reach PostgreSQL.
var ErrUnavailable = errors.New("books: database unavailable")

// Books is the PostgreSQL side of the books. It is safe for concurrent use.
type Books struct {
	pool *pgxpool.Pool
}

// Options configure Open. Zero values mean the defaults.
type Options struct {
	MaxConns int32 // default 8
}

// Open connects to the database at url. It does not wait for the database
// to answer: the first query does.
func Open(ctx context.Context, url string, o Options) (*Books, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("database.url: %w", err)
	}
	if o.MaxConns > 0 {
		cfg.MaxConns = o.MaxConns
	} else {
		cfg.MaxConns = 8
	}
	cfg.ConnConfig.ConnectTimeout = 5 * time.Second
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connecting to the database: %w", err)
	}
	return &Books{pool: pool}, nil
}

// Close closes the pool.
func (b *Books) Close() { b.pool.Close() }

// Ping reports whether the database answers.
func (b *Books) Ping(ctx context.Context) error {
	if err := b.pool.Ping(ctx); err != nil {
		return fmt.Errorf("pinging the database: %w: %w", ErrUnavailable, err)
	}
	return nil
}

// Migrate applies every migration not applied yet (embedded in the binary,
// versioned by goose in goose_db_version) and creates the journal's monthly
// partitions ahead. Several processes may run it at once: a session advisory
// lock serialises them. It prints what it applied to w (nil: nothing).
func (b *Books) Migrate(ctx context.Context, w io.Writer) error {
	if err := b.migrateTo(ctx, w, goose.MaxVersion); err != nil {
		return err
	}
	return b.EnsurePartitions(ctx, time.Now(), partitionsAhead)
}

// migrateTo applies the migrations up to version.
func (b *Books) migrateTo(ctx context.Context, w io.Writer, version int64) error {
	db := stdlib.OpenDBFromPool(b.pool)
	defer db.Close()
	locker, err := lock.NewPostgresSessionLocker()
	if err != nil {
		return err
	}
	p, err := goose.NewProvider(goose.DialectPostgres, db, mustSub(migrations, "migrations"),
		goose.WithSessionLocker(locker), goose.WithDisableGlobalRegistry(true))
	if err != nil {
		return fmt.Errorf("migrating: %w", err)
	}
	res, err := p.UpTo(ctx, version)
	if err != nil {
		return fmt.Errorf("migrating: %w", err)
	}
	if w != nil {
		for _, r := range res {
			fmt.Fprintf(w, "applied %s (%s)\n", r.Source.Path, r.Duration.Round(time.Millisecond))
		}
		v, _ := p.GetDBVersion(ctx)
		fmt.Fprintf(w, "schema version %d\n", v)
	}
	return nil
}

// partitionsAhead is how many months of partitions exist ahead of the
// current one.
const partitionsAhead = 2

// EnsurePartitions creates the journal's monthly partitions for the month
// of now and the months after it (ahead in all), when missing. A partition
// is created before any entry of its month can arrive, so that none lands
// in the default partition (which would block creating it).
func (b *Books) EnsurePartitions(ctx context.Context, now time.Time, ahead int) error {
	m := time.Date(now.UTC().Year(), now.UTC().Month(), 1, 0, 0, 0, 0, time.UTC)
	for i := 0; i <= ahead; i++ {
		from, to := m.AddDate(0, i, 0), m.AddDate(0, i+1, 0)
		name := "journal_" + from.Format("2006_01")
		var exists bool
		if err := b.pool.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, name).Scan(&exists); err != nil {
			return unavailable("creating partitions", err)
		}
		if exists {
			continue
		}
		_, err := b.pool.Exec(ctx, fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %s PARTITION OF journal FOR VALUES FROM ('%s') TO ('%s')`,
			pgx.Identifier{name}.Sanitize(), from.Format(time.RFC3339), to.Format(time.RFC3339)))
		if err != nil && !strings.Contains(err.Error(), "already exists") {
			return fmt.Errorf("creating partition %s: %w", name, err)
		}
	}
	return nil
}

// HasAccounts reports whether the books hold any account: then a Redis
// without its epoch marker lost its data.
func (b *Books) HasAccounts(ctx context.Context) (bool, error) {
	var ok bool
	if err := b.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM accounts)`).Scan(&ok); err != nil {
		return false, unavailable("reading accounts", err)
	}
	return ok, nil
}

func unavailable(op string, err error) error {
	return fmt.Errorf("%s: %w: %w", op, ErrUnavailable, err)
}
