package features

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// Weather choices of a feature set (--weather).
const (
	// WeatherObserved feeds the day's observed weather columns. They are not
	// known 14 days ahead: for a real forecast they are a leak (worth about
	// 0.1 MAE on the Chicago data); the dataset and the replay stream carry
	// them, so this is the default.
	WeatherObserved = "observed"
	// WeatherNone leaves every weather column out: only what is known at
	// forecast time (lags, calendar, game schedules).
	WeatherNone = "none"
)

// Names of the features a Set adds after dow and holiday.
const (
	HolidayKindName  = "holiday_kind"  // HolidayKind code
	DayTypeName      = "day_type"      // DayType code
	ChristmasDayName = "christmas_day" // ChristmasDay position
	MonthName        = "month"         // 1 … 12
	DayOfYearName    = "day_of_year"   // 1 … 366
	Lag364Name       = "lag364"        // target 364 days earlier (same weekday)
	Lag371Name       = "lag371"        // target 371 days earlier (same weekday)
	Lag378Name       = "lag378"        // target 378 days earlier: the 364-day lag of the 14-day lag
	Lag364KindName   = "lag364_holiday_kind"
	Lag14KindName    = "lag14_holiday_kind" // holiday kind of the day the 14-day lag columns describe
	Lag364TypeName   = "lag364_day_type"
	Level14Name      = "level14"      // mean target of the week 14…20 days earlier
	Level378Name     = "level378"     // the same week a year (364 days) before that
	TrendName        = "yoy_trend"    // level14 / level378: the year-over-year growth known at forecast time
	Lag364TrendName  = "lag364_trend" // lag364 × yoy_trend: the seasonal naive carried forward by the trend
	Lag14TypeName    = "lag14_day_type"
)

// Lag14Column is the dataset column that holds the target station's own
// entries 14 days earlier (the 14-day-lag baseline).
const Lag14Column = "Clark_Lake"

// weatherColumns are the numeric columns a WeatherNone set drops.
var weatherColumns = map[string]bool{
	"temp_min": true, "temp": true, "temp_max": true, "temp_change": true, "dew": true, "humidity": true,
	"pressure": true, "pressure_change": true, "wind": true, "wind_max": true, "gust": true, "gust_max": true,
	"percip": true, "percip_max": true, "weather_rain": true, "weather_snow": true, "weather_cloud": true,
	"weather_storm": true,
}

// IsWeather reports whether a numeric column is observed weather.
func IsWeather(column string) bool { return weatherColumns[column] }

// History is the target by day, for the lag features.
type History map[int64]float64

// dayNumber is the day's number since 1970-01-01 (its calendar date, whatever the location).
func dayNumber(t time.Time) int64 {
	y, m, d := t.Date()
	return civil(y, m, d).Unix() / 86400
}

// Add records the target of date.
func (h History) Add(date time.Time, target float64) { h[dayNumber(date)] = target }

// At returns the target days before date, if known.
func (h History) At(date time.Time, daysBefore int) (float64, bool) {
	v, ok := h[dayNumber(date)-int64(daysBefore)]
	return v, ok
}

// Set is a feature set: the numeric columns it keeps, the calendar features
// and the yearly lags of the target, looked up in History. A lag whose day is
// not in History falls back to the 14-day lag (Lag14Column), so a vector can
// always be built; HasLags says whether it did not have to.
type Set struct {
	Weather string  // WeatherObserved (default when empty) or WeatherNone
	History History // the target's past values
}

// Validate checks Weather.
func (s Set) Validate() error {
	if s.Weather != "" && s.Weather != WeatherObserved && s.Weather != WeatherNone {
		return fmt.Errorf("features: weather %q is not %s or %s", s.Weather, WeatherObserved, WeatherNone)
	}
	return nil
}

func (s Set) keep(column string) bool { return s.Weather != WeatherNone || !weatherColumns[column] }

// Names returns the set's feature names in vector order.
func (s Set) Names() []string {
	var out []string
	for _, c := range numeric {
		if s.keep(c) {
			out = append(out, c)
		}
	}
	return append(out, DayOfWeekName, HolidayName, HolidayKindName, DayTypeName, ChristmasDayName, MonthName, DayOfYearName,
		Lag364Name, Lag371Name, Lag378Name, Lag364KindName, Lag14KindName, Lag364TypeName, Lag14TypeName, Level14Name, Level378Name, TrendName, Lag364TrendName)
}

// HasLags reports whether History holds every lag of date.
func (s Set) HasLags(date time.Time) bool {
	for _, d := range []int{364, 371, 378 + levelDays - 1} {
		if _, ok := s.History.At(date, d); !ok {
			return false
		}
	}
	return true
}

// Vector returns the feature vector of one day from its numeric values in
// NumericColumns order.
func (s Set) Vector(values []float64, date time.Time) ([]float64, error) {
	if len(values) != NumNumeric {
		return nil, fmt.Errorf("features: %d numeric values, want %d", len(values), NumNumeric)
	}
	v := make([]float64, 0, NumNumeric+derived)
	lag14 := 0.0
	for i, c := range numeric {
		if c == Lag14Column {
			lag14 = values[i]
		}
		if s.keep(c) {
			v = append(v, values[i])
		}
	}
	lag := func(days int) float64 {
		if x, ok := s.History.At(date, days); ok {
			return x
		}
		return lag14
	}
	hol := 0.0
	if IsHoliday(date) {
		hol = 1
	}
	lv14, lv378 := s.level(date, 14, lag14), s.level(date, 378, lag14)
	trend := 1.0
	if lv378 > 0 {
		trend = lv14 / lv378
	}
	l364, l14 := date.AddDate(0, 0, -364), date.AddDate(0, 0, -14)
	return append(v, float64(DayOfWeek(date)), hol, float64(HolidayKind(date)), float64(DayType(date)), float64(ChristmasDay(date)),
		float64(date.Month()), float64(date.YearDay()), lag(364), lag(371), lag(378),
		float64(HolidayKind(l364)), float64(HolidayKind(l14)), float64(DayType(l364)), float64(DayType(l14)), lv14, lv378, trend, lag(364)*trend), nil
}

// FromMap builds the vector from named numeric values (e.g. a replayed
// dataset row); every numeric column must be present.
func (s Set) FromMap(values map[string]float64, date time.Time) ([]float64, error) {
	vals := make([]float64, NumNumeric)
	for i, name := range numeric {
		x, ok := values[name]
		if !ok {
			return nil, fmt.Errorf("features: missing value for %q", name)
		}
		vals[i] = x
	}
	return s.Vector(vals, date)
}

// Describe is a one-line summary of the set for logs and the card.
func (s Set) Describe() string {
	w := s.Weather
	if w == "" {
		w = WeatherObserved
	}
	n := s.Names()
	return fmt.Sprintf("%d features (weather %s): %s", len(n), w, strings.Join(n[len(n)-derived:], ", "))
}

// Index returns the position of name in names, -1 when absent.
func Index(names []string, name string) int { return slices.Index(names, name) }

// level is the mean target over the 7 days from daysBefore to daysBefore+6
// before date (every weekday once); fallback when any is unknown.
func (s Set) level(date time.Time, daysBefore int, fallback float64) float64 {
	var sum float64
	for k := daysBefore; k < daysBefore+levelDays; k++ {
		x, ok := s.History.At(date, k)
		if !ok {
			return fallback
		}
		sum += x
	}
	return sum / levelDays
}

// levelDays is the length of the level windows (four weeks: each weekday
// four times, so one holiday moves the level by little).
const levelDays = 28

// derived is the number of features a Set appends to the numeric columns.
const derived = 18
