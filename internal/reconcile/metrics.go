package reconcile

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	translations       prometheus.Counter
	recomputed         prometheus.Counter
	translationSeconds prometheus.Histogram
	inputVersion       *prometheus.GaugeVec
	outputVersion      *prometheus.GaugeVec
	ackedVersion       *prometheus.GaugeVec
	nacks              *prometheus.CounterVec
	refused            *prometheus.GaugeVec
	staleness          *prometheus.GaugeVec
	safeMode           *prometheus.GaugeVec
	configNotLoaded    prometheus.Gauge
	configLost         prometheus.Gauge
	storeUp            prometheus.Gauge
	fenced             prometheus.Counter
	abandoned          prometheus.Counter
	configWaited       prometheus.Counter
	configFirst        prometheus.Counter
	inputsDeferred     prometheus.Counter
	translationErrors  *prometheus.CounterVec
	syncSeconds        *prometheus.HistogramVec
	outputResources    *prometheus.GaugeVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		translations: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshrelay_translation_total", Help: "Translations run.",
		}),
		recomputed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshrelay_translation_clusters_recomputed_total", Help: "Cluster outputs computed anew (the others were reused unchanged).",
		}),
		translationSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "meshrelay_translation_duration_seconds", Help: "Time one translation of every cluster took.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10),
		}),
		inputVersion: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "meshrelay_input_snapshot_version", Help: "Version of the latest input snapshot per cluster.",
		}, []string{"cluster"}),
		outputVersion: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "meshrelay_output_snapshot_version", Help: "Desired output snapshot version per cluster.",
		}, []string{"cluster"}),
		ackedVersion: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "meshrelay_output_snapshot_acked_version", Help: "Output snapshot version the cluster's agent last acknowledged.",
		}, []string{"cluster"}),
		nacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshrelay_output_snapshot_nacks_total", Help: "Output snapshots an agent refused.",
		}, []string{"cluster"}),
		refused: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "meshrelay_output_objects_refused", Help: "Objects of the acknowledged output the cluster refused while the rest was applied.",
		}, []string{"cluster"}),
		staleness: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "meshrelay_config_staleness_seconds", Help: "How long the cluster's agent has not acknowledged the desired output.",
		}, []string{"cluster"}),
		safeMode: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "meshrelay_safe_mode_active", Help: "1 for each registered cluster whose missing input holds translation.",
		}, []string{"cluster"}),
		configLost: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "meshrelay_store_config_lost",
			Help: "1 while the store lacks applied configuration this server holds (it lost data); this server keeps translating with its own until the store holds it again."}),
		configNotLoaded: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "meshrelay_safe_mode_config_not_loaded",
			Help: "1 while translation is held because the configuration is incomplete: not loaded from the store yet, a stored resource that does not decode, or the config directory (custom resources) not read yet.",
		}),
		fenced: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshrelay_store_writes_fenced_total", Help: "Writes refused because another management server holds the global lock.",
		}),
		abandoned: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshrelay_translation_abandoned_total", Help: "Translations of input changes given up because the configuration changed meanwhile (translated next, before those inputs).",
		}),
		configWaited: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshrelay_translation_config_waited_total", Help: "Configuration changes that waited for a translation of inputs that had waited MaxInputWait (not abandoned for them).",
		}),
		configFirst: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshrelay_translation_config_first_total", Help: "Translations of a configuration change with the inputs of the previous translation, ahead of newer inputs.",
		}),
		inputsDeferred: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshrelay_translation_inputs_deferred_total", Help: "Times translations of input changes were put off (at most 1 s) while a configuration change was still reaching the connected agents.",
		}),
		translationErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshrelay_translation_errors_total",
			Help: "Problems translations reported, counted on every translation that reports them, by kind: input (belongs to no resource: an undecodable input, a render failure) or resource (a resource's reference or combination that cannot be translated; /status lists them).",
		}, []string{"kind"}),
		syncSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "meshrelay_output_sync_duration_seconds", Help: "Time from publishing a cluster's output to its agent acknowledging that output.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 10),
		}, []string{"cluster"}),
		outputResources: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "meshrelay_output_snapshot_resources", Help: "Resources in the desired output snapshot per cluster.",
		}, []string{"cluster"}),
		storeUp: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "meshrelay_store_up", Help: "1 when the last store operation succeeded.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.translations, m.recomputed, m.translationSeconds, m.inputVersion, m.outputVersion, m.ackedVersion, m.nacks, m.refused, m.staleness, m.safeMode, m.configNotLoaded, m.configLost, m.storeUp, m.fenced, m.abandoned, m.configWaited, m.configFirst, m.inputsDeferred,
			m.translationErrors, m.syncSeconds, m.outputResources)
	}
	for _, k := range []string{errorKindInput, errorKindResource} {
		m.translationErrors.WithLabelValues(k)
	}
	return m
}

// Kinds of meshrelay_translation_errors_total.
const (
	errorKindInput    = "input"
	errorKindResource = "resource"
)
