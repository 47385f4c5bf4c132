// Package reviews is Bookinfo's reviews service in its three versions: v1
// shows no stars, v2 black stars and v3 red stars; v2 and v3 fetch the
// stars from the ratings service.
package reviews

import (
	"context"
	"fmt"
	"net/http"
	"strconv"

	"github.com/castellan-dev/castellan/integration/bookinfo/internal/catalog"
	"github.com/castellan-dev/castellan/integration/bookinfo/internal/hop"
	"github.com/castellan-dev/castellan/integration/bookinfo/internal/ratings"
	"github.com/castellan-dev/castellan/integration/bookinfo/internal/server"
)

// Rating is the stars a review shows; Error is set instead when the
// ratings service could not be reached.
type Rating struct {
	Stars int    `json:"stars,omitempty"`
	Color string `json:"color,omitempty"`
	Error string `json:"error,omitempty"`
}

// Review is one review as the reviews service returns it.
type Review struct {
	Reviewer string  `json:"reviewer"`
	Text     string  `json:"text"`
	Rating   *Rating `json:"rating,omitempty"`
}

// Response is the body of GET /reviews/{id}. Hops lists the calls this
// service made to produce it (its hop to ratings), so the caller can show
// the whole chain.
type Response struct {
	ID      string    `json:"id"`
	Version string    `json:"version"`
	Reviews []Review  `json:"reviews"`
	Hops    []hop.Hop `json:"hops,omitempty"`
}

// Config configures the reviews service.
type Config struct {
	// Version is "v1", "v2" or "v3".
	Version string
	Catalog *catalog.Catalog
	// Ratings calls the ratings service; required for v2 and v3.
	Ratings *hop.Client
}

// StarColor returns the star color of a version: "" (no stars) for v1,
// "black" for v2, "red" for v3.
func StarColor(version string) (string, error) {
	switch version {
	case "v1":
		return "", nil
	case "v2":
		return "black", nil
	case "v3":
		return "red", nil
	}
	return "", fmt.Errorf("reviews: unknown version %q (want v1, v2 or v3)", version)
}

// Handler serves GET /reviews/{id} and GET /health, and reports the
// caller's certificate on every response (see hop.ReportClient).
func Handler(cfg Config) (http.Handler, error) {
	color, err := StarColor(cfg.Version)
	if err != nil {
		return nil, err
	}
	if color != "" && cfg.Ratings == nil {
		return nil, fmt.Errorf("reviews: version %s needs a ratings client", cfg.Version)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", server.Health("reviews-"+cfg.Version))
	mux.HandleFunc("GET /reviews/{id}", func(w http.ResponseWriter, r *http.Request) {
		id, err := strconv.Atoi(r.PathValue("id"))
		if err != nil {
			server.Error(w, http.StatusBadRequest, "reviews: product id must be an integer")
			return
		}
		resp, ok := build(r.Context(), cfg, color, id)
		if !ok {
			server.Error(w, http.StatusNotFound, "reviews: no reviews for product "+strconv.Itoa(id))
			return
		}
		server.JSON(w, http.StatusOK, resp)
	})
	return hop.ReportClient(mux), nil
}

// build assembles the response for product id, calling ratings when the
// version shows stars.
func build(ctx context.Context, cfg Config, color string, id int) (Response, bool) {
	texts, ok := cfg.Catalog.Reviews(id)
	if !ok {
		return Response{}, false
	}
	resp := Response{ID: strconv.Itoa(id), Version: cfg.Version}
	for _, t := range texts {
		resp.Reviews = append(resp.Reviews, Review{Reviewer: t.Reviewer, Text: t.Text})
	}
	if color == "" {
		return resp, true
	}
	var rr ratings.Response
	h, err := cfg.Ratings.Get(ctx, "/ratings/"+strconv.Itoa(id), &rr)
	resp.Hops = append(resp.Hops, h)
	for i := range resp.Reviews {
		rating := &Rating{Error: "Ratings service is currently unavailable"}
		if err == nil {
			if stars, ok := rr.Ratings[resp.Reviews[i].Reviewer]; ok {
				rating = &Rating{Stars: stars, Color: color}
			}
		}
		resp.Reviews[i].Rating = rating
	}
	return resp, true
}
