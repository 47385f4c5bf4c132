package productpage

import (
	"net/http"
	"strconv"

	"github.com/castellan-dev/castellan/integration/bookinfo/internal/catalog"
	"github.com/castellan-dev/castellan/integration/bookinfo/internal/hop"
	"github.com/castellan-dev/castellan/integration/bookinfo/internal/reviews"
	"github.com/castellan-dev/castellan/integration/bookinfo/internal/server"
)

// ProductResponse is the body of GET /api/v1/products/{id}: the details
// and the hop that fetched them.
type ProductResponse struct {
	catalog.Details
	Hops []hop.Hop `json:"hops"`
}

// RatingsResponse is the body of GET /api/v1/products/{id}/ratings. Only
// reviews may call ratings, so the stars come through the reviews service
// (v2 or v3) and Hops shows both hops.
type RatingsResponse struct {
	ID      int            `json:"id"`
	Ratings map[string]int `json:"ratings"`
	Hops    []hop.Hop      `json:"hops"`
}

func (a *app) products(w http.ResponseWriter, _ *http.Request) {
	server.JSON(w, http.StatusOK, a.cfg.Catalog.Products())
}

func (a *app) product(w http.ResponseWriter, r *http.Request) {
	p, ok := a.productID(w, r)
	if !ok {
		return
	}
	var resp ProductResponse
	h, err := a.cfg.Details.Get(r.Context(), "/details/"+strconv.Itoa(p.ID), &resp.Details)
	resp.Hops = []hop.Hop{h}
	if err != nil {
		server.Error(w, http.StatusBadGateway, err.Error())
		return
	}
	server.JSON(w, http.StatusOK, resp)
}

func (a *app) reviews(w http.ResponseWriter, r *http.Request) {
	p, ok := a.productID(w, r)
	if !ok {
		return
	}
	resp, _, err := a.fetchReviews(r, p)
	if err != nil {
		server.Error(w, http.StatusBadGateway, err.Error())
		return
	}
	server.JSON(w, http.StatusOK, resp)
}

func (a *app) ratings(w http.ResponseWriter, r *http.Request) {
	p, ok := a.productID(w, r)
	if !ok {
		return
	}
	rev, h, err := a.fetchReviews(r, p)
	if err != nil {
		server.Error(w, http.StatusBadGateway, err.Error())
		return
	}
	out := RatingsResponse{ID: p.ID, Ratings: map[string]int{}, Hops: append([]hop.Hop{h}, rev.Hops...)}
	for _, rv := range rev.Reviews {
		if rv.Rating != nil && rv.Rating.Stars > 0 {
			out.Ratings[rv.Reviewer] = rv.Rating.Stars
		}
	}
	if len(out.Ratings) == 0 {
		server.Error(w, http.StatusServiceUnavailable,
			"productpage: reviews "+rev.Version+" returned no ratings; ratings come only through reviews v2 or v3")
		return
	}
	server.JSON(w, http.StatusOK, out)
}

func (a *app) fetchReviews(r *http.Request, p catalog.Product) (reviews.Response, hop.Hop, error) {
	var resp reviews.Response
	h, err := a.reviewsClient().Get(r.Context(), "/reviews/"+strconv.Itoa(p.ID), &resp)
	return resp, h, err
}
