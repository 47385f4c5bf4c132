// Package productpage is Bookinfo's front end: the HTML page /productpage
// and a small JSON API, both assembled from the details and reviews
// services. Beside the book the page shows the certificates presented on
// every hop of the request, so a user can watch them rotate.
package productpage

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/castellan-dev/castellan/integration/bookinfo/internal/catalog"
	"github.com/castellan-dev/castellan/integration/bookinfo/internal/hop"
	"github.com/castellan-dev/castellan/integration/bookinfo/internal/reviews"
	"github.com/castellan-dev/castellan/integration/bookinfo/internal/server"
)

// Config configures the product page.
type Config struct {
	Catalog *catalog.Catalog
	// Details calls the details service.
	Details *hop.Client
	// Reviews call the reviews instances (for example v2 and v3), one per
	// request in turn, as a Kubernetes Service would spread them.
	Reviews []*hop.Client
	// Now is the clock used to show time until expiry; nil means time.Now.
	Now func() time.Time
	Log *slog.Logger
}

// Page is everything one product page shows.
type Page struct {
	Product      catalog.Product
	Details      *catalog.Details
	DetailsError string
	Reviews      *reviews.Response
	ReviewsError string
	// Hops are productpage -> details, productpage -> reviews, then the
	// hops reviews reported (reviews -> ratings).
	Hops []hop.Hop
	// Now is when the page was assembled.
	Now time.Time
	// Refresh, if positive, reloads the page every Refresh seconds.
	Refresh int
}

// Handler returns the product page's HTTP handler.
func Handler(cfg Config) (http.Handler, error) {
	if cfg.Catalog == nil || cfg.Details == nil || len(cfg.Reviews) == 0 {
		return nil, errors.New("productpage: Config needs a Catalog, a Details client and at least one Reviews client")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	a := &app{cfg: cfg, tmpl: parseTemplates()}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", server.Health("productpage"))
	mux.HandleFunc("GET /{$}", a.index)
	mux.HandleFunc("GET /productpage", a.productPage)
	mux.HandleFunc("GET /api/v1/products", a.products)
	mux.HandleFunc("GET /api/v1/products/{id}", a.product)
	mux.HandleFunc("GET /api/v1/products/{id}/reviews", a.reviews)
	mux.HandleFunc("GET /api/v1/products/{id}/ratings", a.ratings)
	return mux, nil
}

type app struct {
	cfg  Config
	tmpl templates
	next atomic.Uint64 // round-robin over cfg.Reviews
}

// page fetches details and reviews of product p concurrently.
func (a *app) page(ctx context.Context, p catalog.Product) Page {
	pg := Page{Product: p}
	var wg sync.WaitGroup
	var dHop, rHop hop.Hop
	wg.Go(func() {
		var d catalog.Details
		var err error
		if dHop, err = a.cfg.Details.Get(ctx, "/details/"+strconv.Itoa(p.ID), &d); err != nil {
			pg.DetailsError = "Sorry, product details are currently unavailable for this book."
			a.cfg.Log.Warn("details call failed", "error", err)
			return
		}
		pg.Details = &d
	})
	wg.Go(func() {
		var r reviews.Response
		var err error
		if rHop, err = a.reviewsClient().Get(ctx, "/reviews/"+strconv.Itoa(p.ID), &r); err != nil {
			pg.ReviewsError = "Sorry, product reviews are currently unavailable for this book."
			a.cfg.Log.Warn("reviews call failed", "error", err)
			return
		}
		pg.Reviews = &r
	})
	wg.Wait()
	pg.Hops = append(pg.Hops, dHop, rHop)
	if pg.Reviews != nil {
		pg.Hops = append(pg.Hops, pg.Reviews.Hops...)
	}
	pg.Now = a.cfg.Now()
	return pg
}

func (a *app) reviewsClient() *hop.Client {
	n := a.next.Add(1) - 1
	return a.cfg.Reviews[n%uint64(len(a.cfg.Reviews))]
}

// productID reads the {id} path value, answering 400 or 404 itself when it
// names no product.
func (a *app) productID(w http.ResponseWriter, r *http.Request) (catalog.Product, bool) {
	id, err := strconv.Atoi(r.PathValue("id"))
	if err != nil {
		server.Error(w, http.StatusBadRequest, "productpage: product id must be an integer")
		return catalog.Product{}, false
	}
	p, ok := a.cfg.Catalog.Product(id)
	if !ok {
		server.Error(w, http.StatusNotFound, "productpage: no product with id "+strconv.Itoa(id))
	}
	return p, ok
}
