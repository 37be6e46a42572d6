package metrics

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/campaign-orchestrator/orchestrator/internal/fsm"
)

// Defaults of CollectorOpts.
const (
	DefaultCollectTimeout = 500 * time.Millisecond
	DefaultCacheFor       = time.Second
)

// CollectorOpts tune the collectors that read a value when scraped.
type CollectorOpts struct {
	// Timeout bounds one read (default DefaultCollectTimeout): a slow
	// dependency must not hold the scrape.
	Timeout time.Duration
	// CacheFor is how long a read (or its failure) is reused (default
	// DefaultCacheFor), so that several scrapers, or several processes'
	// scrapes, do not each hit NATS or Redis.
	CacheFor time.Duration
	// Now is the clock of the cache (default time.Now); tests set it.
	Now func() time.Time
}

func (o CollectorOpts) withDefaults() CollectorOpts {
	if o.Timeout <= 0 {
		o.Timeout = DefaultCollectTimeout
	}
	if o.CacheFor <= 0 {
		o.CacheFor = DefaultCacheFor
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

// cache runs read at most once per CacheFor and shares its result.
type cache[T any] struct {
	opts CollectorOpts
	read func(context.Context) (T, error)
	errs atomic.Uint64 // failed reads

	mu   sync.Mutex
	at   time.Time
	val  T
	err  error
	done bool
}

func (c *cache[T]) get() (T, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.opts.Now()
	if c.done && now.Sub(c.at) < c.opts.CacheFor && !now.Before(c.at) {
		return c.val, c.err
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.opts.Timeout)
	defer cancel()
	c.val, c.err = c.read(ctx)
	c.at, c.done = now, true
	if c.err != nil {
		c.errs.Add(1)
	}
	return c.val, c.err
}

// errorsDesc is orchestrator_collector_errors_total; each collector exposes
// its own series, told apart by the collector label.
func errorsDesc(collector string) *prometheus.Desc {
	return prometheus.NewDesc(Namespace+"_collector_errors_total",
		"Failed reads by a collector at scrape time (consumer: JetStream consumer info; campaigns: the store's count by state). The collector's gauges are missing from a scrape whose read failed.",
		nil, prometheus.Labels{"collector": collector})
}

// ConsumerInfoer reads a JetStream consumer's state; jetstream.Consumer
// satisfies it.
type ConsumerInfoer interface {
	Info(ctx context.Context) (*jetstream.ConsumerInfo, error)
}

// ConsumerCollector exposes a JetStream consumer's counts, read from the
// server (Info) when scraped, at most once per CacheFor:
//
//	orchestrator_consumer_pending_messages      messages not yet delivered (num_pending)
//	orchestrator_consumer_ack_pending_messages  delivered, not yet acknowledged (num_ack_pending)
//	orchestrator_consumer_redelivered_messages  redelivered, not yet acknowledged (num_redelivered)
//	orchestrator_consumer_waiting_pulls         pull requests waiting for messages (num_waiting)
//
// with the constant labels stream and consumer. The consumer is shared by
// every worker, so every process reports the same values: aggregate them
// with max, not sum.
type ConsumerCollector struct {
	c                                     *cache[*jetstream.ConsumerInfo]
	pending, ackPending, redeliv, waiting *prometheus.Desc
	errs                                  *prometheus.Desc
}

var _ prometheus.Collector = (*ConsumerCollector)(nil)

// NewConsumerCollector returns a collector of cons, the consumer named
// consumer on stream (the names become constant labels).
func NewConsumerCollector(cons ConsumerInfoer, stream, consumer string, opts CollectorOpts) *ConsumerCollector {
	opts = opts.withDefaults()
	labels := prometheus.Labels{"stream": stream, "consumer": consumer}
	desc := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc(Namespace+"_consumer_"+name, help, nil, labels)
	}
	return &ConsumerCollector{
		c: &cache[*jetstream.ConsumerInfo]{opts: opts, read: cons.Info},
		pending: desc("pending_messages",
			"Messages of the stream the consumer has not delivered yet (JetStream num_pending): the backlog."),
		ackPending: desc("ack_pending_messages",
			"Messages delivered and not yet acknowledged (JetStream num_ack_pending): in flight."),
		redeliv: desc("redelivered_messages",
			"Messages redelivered at least once and not yet acknowledged (JetStream num_redelivered)."),
		waiting: desc("waiting_pulls",
			"Pull requests waiting for messages (JetStream num_waiting): idle worker capacity."),
		errs: errorsDesc("consumer"),
	}
}

// Describe implements prometheus.Collector.
func (cc *ConsumerCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- cc.pending
	ch <- cc.ackPending
	ch <- cc.redeliv
	ch <- cc.waiting
	ch <- cc.errs
}

// Collect implements prometheus.Collector.
func (cc *ConsumerCollector) Collect(ch chan<- prometheus.Metric) {
	info, err := cc.c.get()
	if err == nil && info != nil {
		ch <- prometheus.MustNewConstMetric(cc.pending, prometheus.GaugeValue, float64(info.NumPending))
		ch <- prometheus.MustNewConstMetric(cc.ackPending, prometheus.GaugeValue, float64(info.NumAckPending))
		ch <- prometheus.MustNewConstMetric(cc.redeliv, prometheus.GaugeValue, float64(info.NumRedelivered))
		ch <- prometheus.MustNewConstMetric(cc.waiting, prometheus.GaugeValue, float64(info.NumWaiting))
	}
	ch <- prometheus.MustNewConstMetric(cc.errs, prometheus.CounterValue, float64(cc.c.errs.Load()))
}

// StateCounter counts campaigns by state; store.Store satisfies it.
type StateCounter interface {
	CountByState(ctx context.Context) (map[fsm.State]int64, error)
}

// CampaignsCollector exposes orchestrator_campaigns{state}, the number of
// campaigns in each state (every fsm.States value, zero included), read from
// the store when scraped, at most once per CacheFor. With a shared store
// every process reports the same values: aggregate them with max, not sum.
// Ended campaigns count until the store forgets them (CAMPAIGN_RETENTION).
type CampaignsCollector struct {
	c     *cache[map[fsm.State]int64]
	desc  *prometheus.Desc
	errs  *prometheus.Desc
	order []fsm.State
}

var _ prometheus.Collector = (*CampaignsCollector)(nil)

// NewCampaignsCollector returns a collector that asks s.
func NewCampaignsCollector(s StateCounter, opts CollectorOpts) *CampaignsCollector {
	opts = opts.withDefaults()
	return &CampaignsCollector{
		c: &cache[map[fsm.State]int64]{opts: opts, read: s.CountByState},
		desc: prometheus.NewDesc(Namespace+"_campaigns",
			"Campaigns in each state, all tenants together; ended ones count until they expire (CAMPAIGN_RETENTION).",
			[]string{"state"}, nil),
		errs:  errorsDesc("campaigns"),
		order: fsm.States,
	}
}

// Describe implements prometheus.Collector.
func (cc *CampaignsCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- cc.desc
	ch <- cc.errs
}

// Collect implements prometheus.Collector.
func (cc *CampaignsCollector) Collect(ch chan<- prometheus.Metric) {
	counts, err := cc.c.get()
	if err == nil {
		for _, st := range cc.order {
			ch <- prometheus.MustNewConstMetric(cc.desc, prometheus.GaugeValue, float64(counts[st]), string(st))
		}
	}
	ch <- prometheus.MustNewConstMetric(cc.errs, prometheus.CounterValue, float64(cc.c.errs.Load()))
}
