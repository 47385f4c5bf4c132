// Package ratings is Bookinfo's ratings service: the stars each reviewer
// gave a book, as JSON.
package ratings

import (
	"net/http"
	"strconv"

	"github.com/castellan-dev/castellan/integration/bookinfo/internal/catalog"
	"github.com/castellan-dev/castellan/integration/bookinfo/internal/hop"
	"github.com/castellan-dev/castellan/integration/bookinfo/internal/server"
)

// Response is the body of GET /ratings/{id}.
type Response struct {
	ID      int            `json:"id"`
	Ratings map[string]int `json:"ratings"`
}

// Handler serves GET /ratings/{id} and GET /health, and reports the
// caller's certificate on every response (see hop.ReportClient).
func Handler(cat *catalog.Catalog) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", server.Health("ratings"))
	mux.HandleFunc("GET /ratings/{id}", func(w http.ResponseWriter, r *http.Request) {
		id, err := strconv.Atoi(r.PathValue("id"))
		if err != nil {
			server.Error(w, http.StatusBadRequest, "ratings: product id must be an integer")
			return
		}
		stars, ok := cat.Ratings(id)
		if !ok {
			server.Error(w, http.StatusNotFound, "ratings: no ratings for product "+strconv.Itoa(id))
			return
		}
		server.JSON(w, http.StatusOK, Response{ID: id, Ratings: stars})
	})
	return hop.ReportClient(mux)
}
